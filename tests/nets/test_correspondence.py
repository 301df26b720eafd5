"""heser.nets.correspondence on real features (dlib's face ResNet, first stage, on real crops)
and real label maps (MediaPipe parser): the region-restricted, chunked warp against the dense
masked computation, softmax normalisation, colours drawn only from the same region, no (hw x hw)
tensor anywhere in the forward or backward pass, the cycle, and the region maps."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from heser.data.masks import fig4_masks
from heser.face.labels import CORRESPONDENCE_REGIONS, HEAD_REGIONS, Region
from heser.nets.correspondence import (
    INPAINTING,
    NO_REGION,
    REGION_NAMES,
    cycle_back,
    region_maps,
    split_references,
    warp_with,
)
from heser.nets.identity_dlib import CHIP_SIZE, load_dlib_resnet
from tests.conftest import read_rgb
from tests.nets.correspondence_reference import dense_cycle, dense_warp_with

CROPS = ("images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png")
TAU = 0.01
DILATION = 0.05
FACE, HAIR, EYE, NOSE, TOOTH = (REGION_NAMES.index(n) for n in ("face", "hair", "eye", "nose",
                                                                 "tooth"))


@dataclass(frozen=True)
class Case:
    """A batch of two (A, T) pairs: item 0 is (D, flipped E), item 1 is (E, flipped D)."""

    f_a: Tensor  # [2, 32, 35, 35]
    f_t: Tensor
    regions_a: Tensor  # [2, 35, 35]
    regions_t: Tensor
    colors_t: Tensor  # [2, 3, 256, 256] in [0, 1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The ops here are small (chunks of a few rows): intra-op threads only add synchronisation,
    which made these tests ten times slower on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def parsed(face_backend, parser) -> tuple[np.ndarray, np.ndarray]:
    """Real crops [2, 256, 256, 3] and their real label maps [2, 256, 256]."""
    rgbs, labels = [], []
    for name in CROPS:
        rgb = read_rgb(name)
        (face,) = face_backend(rgb)
        rgbs.append(rgb)
        labels.append(parser(rgb, face.landmarks, face.scheme))
    return np.stack(rgbs), np.stack(labels)


@pytest.fixture(scope="module")
def real(parsed) -> Case:
    rgbs, labels = parsed
    images = torch.from_numpy(rgbs).permute(0, 3, 1, 2).float()
    # T is the other crop, flipped (F(I_T)): features, labels and colours flipped alike
    images_t = images.flip(0).flip(-1)
    labels_a = torch.from_numpy(labels)
    labels_t = labels_a.flip(0).flip(-1)
    net = load_dlib_resnet()
    with torch.no_grad():
        f_a, f_t = (net.feature_maps(_chips(x))[0] for x in (images, images_t))
    masks = fig4_masks(labels_a, labels_t, DILATION)
    size = tuple(f_a.shape[-2:])
    return Case(f_a, f_t, region_maps(labels_a, masks.inpaint_animated[:, 0], size),
                region_maps(labels_t, masks.inpaint_target[:, 0], size), images_t / 255)


def _chips(images: Tensor) -> Tensor:
    return F.interpolate(images, size=(CHIP_SIZE, CHIP_SIZE), mode="area")


def _without(regions: Tensor, item: int, region: int) -> Tensor:
    out = regions.clone()
    out[item][out[item] == region] = NO_REGION
    return out


def _single_pixel(regions: Tensor, item: int, region: int, where: tuple[int, int]) -> Tensor:
    out = _without(regions, item, region)
    out[item, where[0], where[1]] = region
    return out


def _variant(case: Case, name: str) -> Case:
    if name == "empty_in_target":  # A has hair, T has none: A's hair gets no reference
        return replace(case, regions_t=_without(case.regions_t, 0, HAIR))
    if name == "empty_in_source":  # T's eyes are never asked for
        return replace(case, regions_a=_without(case.regions_a, 1, EYE))
    if name == "single_pixel":  # one query and one key; one key for a whole region
        return replace(case, regions_a=_single_pixel(case.regions_a, 0, TOOTH, (20, 17)),
                       regions_t=_single_pixel(_single_pixel(case.regions_t, 0, TOOTH, (21, 18)),
                                               1, NOSE, (18, 17)))
    return case


def _run(fn, case: Case, weights: Tensor, chunk_size: int | None = None):
    f_a, f_t = case.f_a.clone().requires_grad_(), case.f_t.clone().requires_grad_()
    out, valid = fn(f_a, f_t, case.regions_a, case.regions_t, case.colors_t, TAU,
                    chunk_size=chunk_size)
    grads = torch.autograd.grad((out * weights).sum(), (f_a, f_t))
    return out, valid, grads


def _present(regions: Tensor, region: int) -> list[bool]:
    return [bool((item == region).any()) for item in regions]


@pytest.mark.parametrize(("variant", "chunk_size", "dtype_name"), [
    ("real", 7, "float32"), ("real", 7, "float64"),
    ("empty_in_target", 50, "float32"), ("empty_in_source", 50, "float32"),
    ("single_pixel", 7, "float32")])
def test_matches_dense_outputs_and_gradients(real, variant, chunk_size, dtype_name):
    """Chunks of 7 query rows split every real region (the smallest, the eyes, has 13 cells),
    chunks of 50 the face, hair and inpainting regions. Outputs agree within 1e-5;
    gradients (up to about 5: the 1/tau = 100 of eq. 5) within 1e-5 in float64 and within 1e-5
    relative in float32, where rounding alone reaches 3e-5 absolute."""
    dtype = getattr(torch, dtype_name)
    case = _variant(real, variant)
    case = replace(case, f_a=case.f_a.to(dtype), f_t=case.f_t.to(dtype))
    weights = torch.randn(2, 3, 35, 35, generator=torch.Generator().manual_seed(0), dtype=dtype)
    out, valid, (ga, gt) = _run(warp_with, case, weights, chunk_size)
    dense_out, dense_valid, (dense_ga, dense_gt) = _run(dense_warp_with, case, weights)
    assert out.shape == (2, 3, 35, 35) and valid.shape == (2, 1, 35, 35) and out.dtype == dtype
    torch.testing.assert_close(valid, dense_valid, rtol=0, atol=0)
    torch.testing.assert_close(out, dense_out, rtol=0, atol=1e-5)
    rtol = 1e-5 if dtype == torch.float32 else 0
    for got, want in ((ga, dense_ga), (gt, dense_gt)):
        assert want.abs().max() > 1e-3  # the gradients are not trivially zero
        torch.testing.assert_close(got, want, rtol=rtol, atol=1e-5)
    # every region is in both real crops but the teeth, which are in neither (closed mouths)
    for region in range(len(REGION_NAMES)):
        for regions in (real.regions_a, real.regions_t):
            assert all(_present(regions, region)) == (region != TOOTH)
            assert any(_present(regions, region)) == (region != TOOTH)
    no_ref = (case.regions_a >= 0).unsqueeze(1) & (valid == 0)
    assert (out[no_ref.expand_as(out)] == 0).all()
    if variant == "empty_in_target":
        assert no_ref[0, 0][case.regions_a[0] == HAIR].all() and no_ref[0].sum() > 50
    if variant == "single_pixel":  # one key: its colour, exactly
        torch.testing.assert_close(out[0, :, 20, 17], F.interpolate(
            case.colors_t, size=(35, 35), mode="area")[0, :, 21, 18])


def test_softmax_rows_sum_to_one(real):
    """A constant target gives back that constant wherever u has a same-region key."""
    ones = torch.ones(2, 1, 35, 35)
    out, valid = warp_with(real.f_a, real.f_t, real.regions_a, real.regions_t, ones, TAU,
                           chunk_size=7)
    torch.testing.assert_close(out, valid, rtol=0, atol=1e-6)
    for item in range(2):
        shared = [r for r in range(len(REGION_NAMES)) if (real.regions_t[item] == r).any()]
        expected = torch.isin(real.regions_a[item], torch.tensor(shared))
        assert torch.equal(valid[item, 0].bool(), expected)
    assert valid.sum() > 1000


@pytest.mark.parametrize("features", ["real", "random"])
def test_colours_come_from_the_same_region_only(real, features):
    """Target face all red, hair all green, the rest blue: the face reference is red and the
    hair reference green, whatever the features say."""
    case = real
    if features == "random":
        gen = torch.Generator().manual_seed(1)
        case = replace(real, f_a=torch.randn(real.f_a.shape, generator=gen),
                       f_t=torch.randn(real.f_t.shape, generator=gen))
    colours = torch.tensor([0.0, 0.0, 1.0])[None, :, None, None].repeat(2, 1, 35, 35)
    red, green = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    colours.permute(0, 2, 3, 1)[case.regions_t == FACE] = red
    colours.permute(0, 2, 3, 1)[case.regions_t == HAIR] = green
    out, _ = warp_with(case.f_a, case.f_t, case.regions_a, case.regions_t, colours, TAU)
    pixels = out.permute(0, 2, 3, 1)
    for region, colour in ((FACE, red), (HAIR, green)):
        got = pixels[case.regions_a == region]
        assert len(got) > 50
        torch.testing.assert_close(got, colour.expand_as(got), rtol=0, atol=1e-6)


class _PeakNumel(TorchDispatchMode):
    """The largest tensor any aten op returns while active, forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, Tensor)]
        self.peak = max([self.peak, *sizes])
        return out


def test_never_builds_an_hw_by_hw_matrix(parsed, real):
    """At 128 x 128 features (512 crops) the dense similarity alone is 16384^2 floats, 1 GiB:
    the chunked warp, gradients included, never makes a tensor bigger than one chunk of one
    region, and the guard does see the dense version's matrix."""
    labels = torch.from_numpy(parsed[1][1:])
    ring = fig4_masks(labels, labels, DILATION).inpaint_target[:, 0]
    regions = region_maps(labels, ring, (128, 128))
    gen = torch.Generator().manual_seed(2)
    f_a, f_t = (torch.randn(1, 16, 128, 128, generator=gen).requires_grad_() for _ in range(2))
    colours = torch.rand(1, 3, 512, 512, generator=gen)
    chunk = 256
    with _PeakNumel() as guard:
        out, _ = warp_with(f_a, f_t, regions, regions, colours, TAU, chunk_size=chunk)
        out.sum().backward()
    largest = max(int((regions == r).sum()) for r in range(len(REGION_NAMES)))
    assert largest > 4000 and f_a.grad.abs().sum() > 0
    assert guard.peak <= max(chunk * largest, 128 * 128 * 16)
    assert guard.peak * 30 < (128 * 128) ** 2
    small = replace(real, f_a=real.f_a[:1], f_t=real.f_t[:1], regions_a=real.regions_a[:1],
                    regions_t=real.regions_t[:1], colors_t=real.colors_t[:1])
    with _PeakNumel() as dense_guard:
        dense_warp_with(small.f_a, small.f_t, small.regions_a, small.regions_t, small.colors_t,
                        TAU)
    assert dense_guard.peak >= (35 * 35) ** 2


def test_cycle_is_the_transposed_correspondence(real):
    """T -> A -> T from the forward reference equals two dense warps, the second with T querying
    A (M_r transposed), and is differentiable through both; with the same features on both
    sides and a sharp softmax it gives I_T back."""
    f_a = real.f_a.clone().requires_grad_()
    reference, _ = warp_with(f_a, real.f_t, real.regions_a, real.regions_t, real.colors_t, TAU,
                             chunk_size=20)
    back, back_valid = cycle_back(f_a, real.f_t, real.regions_a, real.regions_t, reference, TAU,
                                  chunk_size=20)
    want, want_valid = dense_cycle(real.f_a, real.f_t, real.regions_a, real.regions_t,
                                   real.colors_t, TAU)
    torch.testing.assert_close(back, want, rtol=0, atol=1e-5)
    assert torch.equal(back_valid, want_valid) and back_valid.sum() > 1000
    back.sum().backward()
    assert f_a.grad.abs().sum() > 0
    reference, _ = warp_with(real.f_t, real.f_t, real.regions_t, real.regions_t, real.colors_t,
                             1e-4)
    self_cycle, self_valid = cycle_back(real.f_t, real.f_t, real.regions_t, real.regions_t,
                                        reference, 1e-4)
    colours = F.interpolate(real.colors_t, size=(35, 35), mode="area")
    error = (self_cycle - colours).abs() * self_valid
    assert error.sum() / (3 * self_valid.sum()) < 0.01


@pytest.mark.parametrize("tau", [0.01, 1.0])
def test_cycle_hand_computed(tau):
    """One region, two positions per image, features e and -e (centred cosine +1 with the same,
    -1 with the other), swapped between A and T. A draws T's colours crosswise with weight
    w = 1 / (1 + exp(-2 / tau)) on the match; the trip back gives position v
    (w^2 + (1 - w)^2) T(v) + 2 w (1 - w) T(other v): T's colours exactly as tau -> 0."""
    e = torch.tensor([1.0, -1.0])
    f_a = torch.stack([e, -e], dim=-1).view(1, 2, 1, 2)
    f_t = torch.stack([-e, e], dim=-1).view(1, 2, 1, 2)
    regions = torch.zeros(1, 1, 2, dtype=torch.long)
    colours = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8]]).T.reshape(1, 3, 1, 2)
    first, second = colours[..., 0], colours[..., 1]
    w = 1 / (1 + math.exp(-2 / tau))
    reference, valid = warp_with(f_a, f_t, regions, regions, colours, tau)
    torch.testing.assert_close(reference[..., 0], w * second + (1 - w) * first)
    torch.testing.assert_close(reference[..., 1], w * first + (1 - w) * second)
    back, back_valid = cycle_back(f_a, f_t, regions, regions, reference, tau)
    keep, swap = w**2 + (1 - w) ** 2, 2 * w * (1 - w)
    torch.testing.assert_close(back[..., 0], keep * first + swap * second)
    torch.testing.assert_close(back[..., 1], keep * second + swap * first)
    assert valid.all() and back_valid.all()
    if tau == 0.01:
        torch.testing.assert_close(back, colours)


def test_split_references_partitions_head_and_inpainting(real):
    reference, _ = warp_with(real.f_a, real.f_t, real.regions_a, real.regions_t, real.colors_t,
                             TAU)
    head, inpaint = split_references(reference, real.regions_a, (35, 35))  # same size: exact
    is_head = ((real.regions_a >= 0) & (real.regions_a != INPAINTING)).unsqueeze(1)
    is_ring = (real.regions_a == INPAINTING).unsqueeze(1)
    assert torch.equal(head, reference * is_head) and torch.equal(inpaint, reference * is_ring)
    assert head.abs().sum() > 0 and inpaint.abs().sum() > 0
    head_up, inpaint_up = split_references(reference, real.regions_a, (256, 256))
    assert head_up.shape == inpaint_up.shape == (2, 3, 256, 256)
    whole = F.interpolate(reference * (real.regions_a >= 0).unsqueeze(1), size=(256, 256),
                          mode="bilinear", align_corners=False)
    torch.testing.assert_close(head_up + inpaint_up, whole)


def test_region_maps_sample_cell_centres_and_inpainting_wins(parsed):
    labels = torch.from_numpy(parsed[1])
    ring = torch.zeros(2, 256, 256, dtype=torch.bool)
    ring[:, 180:200, :] = True
    regions = region_maps(labels, ring, (64, 35))
    assert regions.shape == (2, 64, 35) and regions.dtype == torch.long
    rows = ((np.arange(64) + 0.5) * 256 / 64).astype(int)
    cols = ((np.arange(35) + 0.5) * 256 / 35).astype(int)
    sampled = parsed[1][:, rows][:, :, cols]
    expected = np.full(sampled.shape, NO_REGION)
    for index, group in enumerate(CORRESPONDENCE_REGIONS.values()):
        expected[np.isin(sampled, [int(r) for r in group])] = index
    expected[ring.numpy()[:, rows][:, :, cols]] = INPAINTING
    np.testing.assert_array_equal(regions.numpy(), expected)
    kept = regions[~ring[:, rows][:, :, cols]]
    assert {FACE, HAIR, EYE, NOSE, NO_REGION} <= set(kept.tolist())
    body = sampled == Region.BODY
    assert body.any() and (regions.numpy()[body & (expected != INPAINTING)] == NO_REGION).all()


def test_head_regions_are_exactly_the_head_mask(parsed):
    """The head groups hold M^H's labels, each once: the head-colour reference I^HR is drawn on
    I_A's head mask M_A^H and nowhere else. The neck is the target's: inside the ring it takes
    the ring's colours, below it it is in no region (it used to be "face" and got I^HR)."""
    grouped = [label for group in CORRESPONDENCE_REGIONS.values() for label in group]
    assert sorted(grouped) == sorted(HEAD_REGIONS)
    labels = torch.from_numpy(parsed[1])
    masks = fig4_masks(labels, labels, DILATION)
    ring = masks.inpaint_animated[:, 0].bool()
    regions = region_maps(labels, ring, (256, 256))  # at the labels' size: no resampling
    head = (regions >= 0) & (regions != INPAINTING)
    assert torch.equal(head, masks.head_animated[:, 0].bool())
    assert torch.equal(regions == INPAINTING, ring)
    neck = labels == Region.NECK
    assert (neck & ring).sum() > 100 and (neck & ~ring).sum() > 100
    assert (regions[neck & ~ring] == NO_REGION).all()


def test_shape_errors(real):
    with pytest.raises(ValueError, match="feature maps differ"):
        warp_with(real.f_a, real.f_t[..., :20], real.regions_a, real.regions_t, real.colors_t,
                  TAU)
    with pytest.raises(ValueError, match="region map"):
        warp_with(real.f_a, real.f_t, real.regions_a[:, :20], real.regions_t, real.colors_t, TAU)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        region_maps(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9), (4, 4))
