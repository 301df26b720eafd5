"""heser.imaging: the one place images cross between uint8 files and [-1, 1] tensors."""

from __future__ import annotations

import numpy as np
import torch

from heser.imaging import (
    from_uint8,
    grayscale,
    resize,
    resize_labels,
    tile_grid,
    to_255,
    to_uint8,
    to_unit,
)


def test_uint8_round_trip_is_exact() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    image = from_uint8(rgb)
    assert image.shape == (3, 5, 7) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert float(from_uint8(np.full((1, 1, 3), 255, np.uint8)).min()) == 1.0
    assert float(from_uint8(np.zeros((1, 1, 3), np.uint8)).max()) == -1.0
    np.testing.assert_array_equal(to_uint8(image), rgb)
    np.testing.assert_array_equal(to_uint8(image[None]), rgb)  # a batch of one too


def test_unit_ranges_clamp() -> None:
    images = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_unit(images).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert to_255(images).tolist() == [0.0, 0.0, 127.5, 255.0, 255.0]


def test_grayscale_uses_bt601_luma() -> None:
    images = torch.zeros(1, 3, 2, 2)
    images[:, 0], images[:, 1], images[:, 2] = 1.0, 0.5, 0.25
    expected = 0.299 * 1.0 + 0.587 * 0.5 + 0.114 * 0.25
    assert grayscale(images).shape == (1, 1, 2, 2)
    torch.testing.assert_close(grayscale(images), torch.full((1, 1, 2, 2), expected))


def test_resize_labels_samples_cell_centres() -> None:
    """A 2x downscale keeps the label at each 2x2 cell's centre-ish pixel (1, 1), not the
    top-left one that plain "nearest" takes."""
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, 1::2, 1::2] = 7  # only the bottom-right pixel of every 2x2 cell
    small = resize_labels(labels, 2)
    assert small.dtype == torch.long and small.tolist() == [[[7, 7], [7, 7]]]


def test_resize_is_identity_at_same_size_and_antialiased() -> None:
    images = torch.rand(2, 3, 8, 8)
    assert resize(images, 8) is images
    checker = torch.ones(1, 1, 8, 8)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = -1  # a 1-pixel checkerboard
    assert resize(checker, 4).abs().max() < 0.5  # averaged out, not point-sampled to +-1


def test_tile_grid_lays_rows_and_columns() -> None:
    columns = [torch.full((3, 3, 2, 2), value) for value in (-1.0, 1.0)]
    grid = tile_grid(columns, 2)
    assert grid.shape == (4, 4, 3) and grid.dtype == np.uint8
    assert (grid[:, :2] == 0).all() and (grid[:, 2:] == 255).all()
