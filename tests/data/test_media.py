"""Reading real images, and the errors for bad ones."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from heser.data.media import MediaError, read_image
from tests.conftest import MIN_SIDE, read_rgb, sample_path


def test_reads_real_jpeg_and_png():
    rgb, notes = read_image(sample_path("images/lp_d8jpg_man_curly_hair.jpg"), MIN_SIDE)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and notes == []
    rgb, _ = read_image(sample_path("images/st_woman_B_happy1.png"), MIN_SIDE)
    assert rgb.shape[2] == 3


def test_channel_order_is_rgb():
    # the yellow wall behind lp_d9jpg: red and green high, blue low
    rgb = read_rgb("images/lp_d9jpg_woman_long_hair_yellow.jpg")
    r, g, b = rgb[10, -10].astype(int)
    assert r > 150 and g > 120 and b < 100


def test_tiny_image_is_rejected(tmp_path: Path):
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), cv2.resize(cv2.imread(str(sample_path("images/dt_man_E_crop256.png"))),
                                      (20, 20)))
    with pytest.raises(MediaError, match=r"tiny.png: image too small \(20x20"):
        read_image(tiny, MIN_SIDE)


def test_corrupt_and_empty_files_name_the_file(tmp_path: Path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.jpg: zero-byte file"):
        read_image(empty, MIN_SIDE)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(sample_path("images/lp_d8jpg_man_curly_hair.jpg").read_bytes()[:300])
    with pytest.raises(MediaError, match="corrupt.jpg: not a readable image"):
        read_image(corrupt, MIN_SIDE)
    with pytest.raises(MediaError, match="missing.jpg: file not found"):
        read_image(tmp_path / "missing.jpg", MIN_SIDE)
