"""Image conventions shared by training, inference and evaluation.

Networks see float images in [-1, 1], [B, 3, H, W]; files, OpenCV and the metrics see uint8
H x W x 3 RGB. Every conversion between the two, and the resampling of images and label maps,
lives here so that training and inference cannot drift apart (and inference needs nothing from
heser.train).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights, the Y row of YIQ
# the per-channel RGB statistics every torchvision ImageNet network was trained with ([0, 1] input)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def from_uint8(rgb: np.ndarray | Tensor) -> Tensor:
    """uint8 H x W x 3 -> float32 [3, H, W] in [-1, 1] (a copy)."""
    pixels = torch.as_tensor(np.array(rgb, copy=True)) if isinstance(rgb, np.ndarray) else rgb
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_unit(images: Tensor) -> Tensor:
    """[-1, 1] network images -> [0, 1]."""
    return (images.clamp(-1, 1) + 1) / 2


def to_255(images: Tensor) -> Tensor:
    """[-1, 1] network images -> [0, 255] float, the input range of dlib's face network."""
    return to_unit(images) * 255.0


def to_uint8(image: Tensor) -> np.ndarray:
    """[3, H, W] (or [1, 3, H, W]) in [-1, 1] -> uint8 H x W x 3."""
    image = image[0] if image.ndim == 4 else image
    unit = to_unit(image.detach().float()).permute(1, 2, 0).cpu().numpy()
    return (unit * 255).round().astype(np.uint8)


def tile_grid(rows: list[Tensor], count: int) -> np.ndarray:
    """Columns of [B, 3, S, S] images in [-1, 1] -> a uint8 grid of ``count`` rows, one column
    per tensor (the sample grids of MLflow and reports/)."""
    grid = torch.stack([column[:count].float() for column in rows], dim=1)  # [n, cols, 3, S, S]
    n, cols, channels, height, width = grid.shape
    grid = grid.permute(2, 0, 3, 1, 4).reshape(channels, n * height, cols * width)
    return to_uint8(grid)


def resize(images: Tensor, size: int) -> Tensor:
    """[B, C, H, W] -> [B, C, size, size], antialiased bilinear (a no-op at the same size)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def resize_labels(labels: Tensor, size: int) -> Tensor:
    """[B, H, W] label maps -> [B, size, size] long, sampled at cell centres ("nearest-exact":
    labels must not be blended, and plain "nearest" takes each cell's top-left pixel, which
    shifts every region up and left)."""
    resized = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest-exact")
    return resized[:, 0].long()


def grayscale(images: Tensor) -> Tensor:
    """[B, 3, H, W] -> [B, 1, H, W] luma (in the images' own range)."""
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
