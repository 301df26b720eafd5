"""The aligner's augmentation A and central crop C, on real crops and on images with known
geometry (a bright dot, a bright central square)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from heser.data.augment import (
    central_crop,
    gaussian_blur,
    jitter_colors,
    pose_augment,
    similarity_points,
    strip_appearance,
    warp_similarity,
)
from tests.conftest import read_rgb


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """Two real 256x256 face crops as a [2, 3, H, W] batch in [-1, 1]."""
    names = ("images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png")
    return torch.stack([_tensor(read_rgb(name)) for name in names])


def _dot(height: int, width: int, row: float, col: float, sigma: float = 1.5) -> torch.Tensor:
    """A [1, 3, H, W] image, -1 except a Gaussian blob centred on pixel (row, col)."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    blob = torch.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))
    return (blob * 2 - 1).expand(1, 3, height, width).clone()


def _centroid(image: torch.Tensor) -> tuple[float, float]:
    """(row, col) of the brightness-weighted centre of a [3, H, W] image."""
    weight = (image[0] + 1).clamp(min=0)
    rows, cols = torch.meshgrid(torch.arange(image.shape[1]), torch.arange(image.shape[2]),
                                indexing="ij")
    return float((weight * rows).sum() / weight.sum()), float((weight * cols).sum() / weight.sum())


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_pose_augment_keeps_shape_and_range_and_varies_per_image(crops: torch.Tensor):
    batch = crops[:1].expand(4, -1, -1, -1)
    out = pose_augment(batch, _generator(), 20, 0.1, 0.05, 0.3)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= -1 and out.max() <= 1
    assert all((out[i] - out[j]).abs().mean() > 0.02 for i in range(4) for j in range(i))
    again = pose_augment(batch, _generator(), 20, 0.1, 0.05, 0.3)
    assert torch.equal(out, again)


def test_zero_strength_is_the_identity(crops: torch.Tensor):
    assert torch.allclose(pose_augment(crops, _generator(), 0, 0, 0, 0), crops, atol=1e-4)
    assert torch.equal(jitter_colors(crops, _generator(), 0), crops)
    for padding in ("border", "reflection"):
        same = warp_similarity(crops, torch.zeros(2), torch.ones(2), torch.zeros(2, 2), padding)
        assert torch.allclose(same, crops, atol=1e-4)


@pytest.mark.parametrize(("angle", "scale", "shift", "expected"), [
    (90, 1, (0, 0), (16, 32)),  # counter-clockwise on screen: right of centre goes up
    (-90, 1, (0, 0), (48, 32)),
    (30, 1, (0, 0), (32 - 16 * np.sin(np.pi / 6), 32 + 16 * np.cos(np.pi / 6))),
    (0, 1.5, (0, 0), (32, 56)),  # 16 px from the centre -> 24 px
    (0, 1, (-0.25, 0.125), (32 + 65 / 8, 48 - 65 / 4)),  # shifts are fractions of the side
])
def test_similarity_moves_a_dot_where_expected(angle, scale, shift, expected):
    image = _dot(65, 65, 32, 48)  # 65 px: pixel 32 is the exact centre
    out = warp_similarity(image, torch.tensor([float(angle)]), torch.tensor([float(scale)]),
                          torch.tensor([shift], dtype=torch.float32), "border")
    assert _centroid(out[0]) == pytest.approx(expected, abs=0.3)


@pytest.mark.parametrize(("angle", "scale", "shift"), [
    (90, 1, (0, 0)), (30, 1, (0, 0)), (-20, 1.3, (0.1, -0.05)), (8, 0.9, (-0.05, 0.05))])
def test_points_move_with_the_picture(angle, scale, shift):
    image = _dot(64, 80, 20, 50)  # rows, columns: a non-square picture, the dot off centre
    args = (torch.tensor([float(angle)]), torch.tensor([float(scale)]),
            torch.tensor([shift], dtype=torch.float32))
    row, col = _centroid(warp_similarity(image, *args, "border")[0])
    x, y, z = similarity_points(torch.tensor([[[50.0, 20.0, 4.0]]]), *args, 64, 80)[0, 0]
    assert (float(y), float(x)) == pytest.approx((row, col), abs=0.3)
    assert float(z) == pytest.approx(4.0 * scale)


def test_rotation_is_in_pixels_on_non_square_images():
    image = _dot(64, 96, 31.5, 47.5 + 20)  # 20 px right of the centre (31.5, 47.5)
    out = warp_similarity(image, torch.tensor([90.0]), torch.ones(1), torch.zeros(1, 2), "border")
    assert _centroid(out[0]) == pytest.approx((31.5 - 20, 47.5), abs=0.3)


def test_pose_augment_rotation_keeps_the_distance_from_the_centre():
    image = _dot(65, 65, 32, 52).expand(8, -1, -1, -1)
    out = pose_augment(image, _generator(1), 45, 0, 0, 0, padding_mode="border")
    angles = []
    for one in out:
        row, col = _centroid(one)
        assert np.hypot(row - 32, col - 32) == pytest.approx(20, abs=0.3)
        angles.append(np.degrees(np.arctan2(32 - row, col - 32)))
    assert max(np.abs(angles)) <= 45 + 1 and np.ptp(angles) > 10


def test_color_jitter_changes_colours_only():
    image = torch.rand(4, 3, 32, 32, generator=_generator(2)) * 1.6 - 0.8
    out = jitter_colors(image, _generator(3), 0.4)
    assert out.shape == image.shape and out.min() >= -1 and out.max() <= 1
    assert (out - image).abs().mean() > 0.02
    # a flat image stays flat: no spatial change, just a new colour per image
    flat = torch.full((4, 3, 8, 8), 0.2)
    jittered = jitter_colors(flat, _generator(3), 0.4)
    assert torch.allclose(jittered, jittered[..., :1, :1].expand_as(jittered), atol=1e-6)


def test_central_crop_of_a_known_image():
    image = torch.full((1, 3, 64, 64), -1.0)
    image[..., 16:48, 16:48] = torch.linspace(0, 1, 32)  # the central half, a ramp
    crop = central_crop(image, 0.5, 32)
    assert torch.equal(crop, image[..., 16:48, 16:48])
    small = central_crop(image, 0.5, (16, 8))
    assert small.shape == (1, 3, 16, 8) and small.min() >= 0  # no border pixels leak in
    assert torch.allclose(central_crop(image, 1.0, 64), image)
    with pytest.raises(ValueError, match="fraction"):
        central_crop(image, 0, 32)


def test_central_crop_antialiases_like_pil(crops: torch.Tensor):
    """A 4x downscale matches PIL's antialiased bilinear resize, not a point sampling."""
    out = central_crop(crops[:1], 0.75, 48)
    crop = read_rgb("images/dt_woman_D_crop256.png")[32:224, 32:224]
    pil = np.asarray(Image.fromarray(crop).resize((48, 48), Image.Resampling.BILINEAR))
    assert (out[0] - _tensor(pil)).abs().mean() < 0.01


def test_gaussian_blur_keeps_the_mean_and_spreads_a_dot():
    dot = _dot(33, 33, 16, 16, sigma=0.5)
    blurred = gaussian_blur(dot, 2.0)
    assert blurred.shape == dot.shape
    assert blurred.mean().item() == pytest.approx(dot.mean().item(), abs=1e-4)
    assert blurred[0, 0, 16, 16] < dot[0, 0, 16, 16]  # the peak spreads out
    assert blurred[0, 0, 16, 19] > dot[0, 0, 16, 19]
    assert torch.equal(gaussian_blur(dot, 0), dot)


def test_strip_appearance_grays_and_blurs_per_image(crops: torch.Tensor):
    generator = torch.Generator().manual_seed(0)
    gray = strip_appearance(crops, generator, grayscale_p=1.0, max_blur=0.0)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    blurred = strip_appearance(crops, torch.Generator().manual_seed(0), 0.0, 0.05)
    assert not torch.allclose(blurred, crops, atol=1e-3)
    # off draws nothing: the generator's next number is the one it would have been
    off, untouched = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert strip_appearance(crops, off, 0.0, 0.0) is crops
    assert torch.rand((), generator=off) == torch.rand((), generator=untouched)
