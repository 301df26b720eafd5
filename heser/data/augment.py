"""The aligner's input transforms (Sec. 3.1), batched on whatever device the images are on.

* A(.), the pose path's augmentation: a random similarity transform (rotation, scale, shift)
  plus colour jitter per image. The pose encoder sees A(I_T) so that it cannot pass identity or
  appearance cues to the generator, while the head pose survives approximately.
* C(.), the central crop that the identity and expression encoders see: it keeps the face and
  drops most background, hair and shoulders.

Images are float [B, 3, H, W] in [-1, 1]. Random draws use a ``torch.Generator`` (on the CPU
or on the images' device), so an augmentation is reproducible from the generator's seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from heser.imaging import LUMA

# ITU-R BT.601 luma and the YIQ chroma axes: hue is a rotation of the (I, Q) plane.
_RGB_TO_YIQ = torch.tensor([LUMA,
                            [0.596, -0.274, -0.322],
                            [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _uniform(generator: torch.Generator, shape: tuple[int, ...], bound: float,
             like: torch.Tensor) -> torch.Tensor:
    """U(-bound, bound) drawn on the generator's device, returned on ``like``'s."""
    u = torch.rand(shape, generator=generator, device=generator.device)
    return ((2 * u - 1) * bound).to(like.device, like.dtype)


def similarity_theta(angles_deg: torch.Tensor, scales: torch.Tensor, shifts: torch.Tensor,
                     height: int, width: int) -> torch.Tensor:
    """``affine_grid`` matrices [B, 2, 3] for similarity transforms about the image centre.

    The content is rotated counter-clockwise on screen by ``angles_deg``, scaled by ``scales``
    and moved by ``shifts`` [B, 2] (x right, y down) in fractions of the width and height.
    affine_grid wants the inverse map (output -> input) in normalised coordinates, where a
    pixel-space rotation becomes D^-1 R D with D = diag(W/2, H/2).
    """
    rad = torch.deg2rad(angles_deg)
    cos, sin = torch.cos(rad) / scales, torch.sin(rad) / scales
    inverse = torch.stack([torch.stack([cos, -sin * height / width], -1),
                           torch.stack([sin * width / height, cos], -1)], -2)
    offset = -(inverse @ (2 * shifts).unsqueeze(-1))  # a shift of 1 = the whole side = 2 units
    return torch.cat([inverse, offset], -1)


def warp_similarity(images: torch.Tensor, angles_deg: torch.Tensor, scales: torch.Tensor,
                    shifts: torch.Tensor, padding_mode: str = "reflection") -> torch.Tensor:
    """Apply ``similarity_theta`` transforms to [B, C, H, W] images (bilinear)."""
    theta = similarity_theta(angles_deg, scales, shifts, *images.shape[-2:])
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode,
                         align_corners=False)


def similarity_points(points: torch.Tensor, angles_deg: torch.Tensor, scales: torch.Tensor,
                      shifts: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Where ``warp_similarity`` moves points [B, N, 2|3] (x, y, optional z) in pixel-index
    coordinates (pixel (0, 0)'s centre at 0, as the crops' landmarks are): the same rotation
    about the image centre, scale and shift; a z column is scaled like x and y, as the crop
    transforms landmarks (heser.face.align.transform_points)."""
    rad = torch.deg2rad(angles_deg).to(points.dtype)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # counter-clockwise on screen, with y pointing down
    rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    centre = points.new_tensor([(width - 1) / 2, (height - 1) / 2])
    scales = scales.to(points.dtype).view(-1, 1, 1)
    moved = (points[..., :2] - centre) @ rotation.transpose(-1, -2) * scales + centre
    moved = moved + shifts.to(points.dtype).unsqueeze(1) * points.new_tensor([width, height])
    return torch.cat([moved, points[..., 2:] * scales], -1)


def jitter_colors(images: torch.Tensor, generator: torch.Generator,
                  strength: float) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors in [1 - s, 1 + s] and a hue
    rotation in [-s, s] * 90 degrees (s = ``strength``); 0 leaves the images unchanged."""
    if strength == 0:
        return images
    b = images.shape[0]
    brightness, contrast, saturation = (1 + _uniform(generator, (3, b, 1, 1, 1), strength, images))
    hue = _uniform(generator, (b,), strength * math.pi / 2, images)
    rgb = (images + 1) / 2 * brightness
    rgb = _luma(rgb).mean((2, 3), keepdim=True) * (1 - contrast) + rgb * contrast
    rgb = _luma(rgb) * (1 - saturation) + rgb * saturation
    return _rotate_hue(rgb, hue).clamp(0, 1) * 2 - 1


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return torch.einsum("c,bchw->bhw", _RGB_TO_YIQ[0].to(rgb), rgb).unsqueeze(1)


def _rotate_hue(rgb: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each image's chroma (the YIQ I-Q plane) by ``angles`` radians, keeping luma."""
    cos, sin = angles.cos(), angles.sin()
    one, zero = torch.ones_like(angles), torch.zeros_like(angles)
    rotation = torch.stack([torch.stack([one, zero, zero], -1),
                            torch.stack([zero, cos, -sin], -1),
                            torch.stack([zero, sin, cos], -1)], -2)
    mix = _YIQ_TO_RGB.to(rgb) @ rotation @ _RGB_TO_YIQ.to(rgb)  # [B, 3, 3] in RGB
    return torch.einsum("bij,bjhw->bihw", mix, rgb)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [B, C, H, W] images, ``sigma`` in pixels (reflect padding)."""
    if sigma <= 0:
        return images
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def strip_appearance(images: torch.Tensor, generator: torch.Generator, grayscale_p: float,
                     max_blur: float) -> torch.Tensor:
    """Per image: gray with probability ``grayscale_p``, then a Gaussian blur of sigma drawn in
    [0, max_blur * side]. Nothing is drawn for a zero setting, so turning both off leaves every
    other random draw, and so the training run, unchanged."""
    if grayscale_p == 0 and max_blur == 0:
        return images
    out = []
    for image in images.split(1):
        if grayscale_p > 0 and float(torch.rand((), generator=generator)) < grayscale_p:
            image = _luma((image + 1) / 2).expand_as(image) * 2 - 1
        if max_blur > 0:
            sigma = float(torch.rand((), generator=generator)) * max_blur * image.shape[-1]
            image = gaussian_blur(image, sigma)
        out.append(image)
    return torch.cat(out)


def draw_similarity(generator: torch.Generator, images: torch.Tensor, max_rotation_deg: float,
                    max_scale: float, max_shift: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (angles [B], scales [B], shifts [B, 2]) for ``warp_similarity`` of ``images``:
    rotation in [-max_rotation_deg, max_rotation_deg], scale in [1 - max_scale,
    1 + max_scale], shift in [-max_shift, max_shift] of the side per axis."""
    if not 0 <= max_scale < 1:
        raise ValueError(f"max_scale must be in [0, 1), got {max_scale}")
    b = images.shape[0]
    angles = _uniform(generator, (b,), max_rotation_deg, images)
    scales = 1 + _uniform(generator, (b,), max_scale, images)
    shifts = _uniform(generator, (b, 2), max_shift, images)
    return angles, scales, shifts


def pose_augment(images: torch.Tensor, generator: torch.Generator, max_rotation_deg: float,
                 max_scale: float, max_shift: float, color_jitter: float,
                 padding_mode: str = "reflection", grayscale_p: float = 0.0,
                 max_blur: float = 0.0) -> torch.Tensor:
    """A(I_T), Sec. 3.1: a random similarity transform and colour jitter per image, then
    optionally gray and blur (``strip_appearance``; beyond the paper's description of A).

    Rotation in [-max_rotation_deg, max_rotation_deg], scale in [1 - max_scale, 1 + max_scale],
    shift in [-max_shift, max_shift] of the side per axis, colour jitter of strength
    ``color_jitter`` (see ``jitter_colors``). All zero returns the images (up to rounding).
    """
    angles, scales, shifts = draw_similarity(generator, images, max_rotation_deg, max_scale,
                                             max_shift)
    warped = warp_similarity(images, angles, scales, shifts, padding_mode)
    jittered = jitter_colors(warped, generator, color_jitter)
    return strip_appearance(jittered, generator, grayscale_p, max_blur)


def central_crop(images: torch.Tensor, fraction: float,
                 out_size: int | tuple[int, int]) -> torch.Tensor:
    """C(I), Sec. 3.1: the central ``fraction`` of each side, resized (antialiased) to out_size."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    height, width = images.shape[-2:]
    crop_h, crop_w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = images[..., top:top + crop_h, left:left + crop_w]
    size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    return F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)
