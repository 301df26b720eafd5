"""heser.io.decode_png: OpenCV for the shards' 8-bit grey and RGB PNGs, PIL for the rest, the
same arrays either way."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from heser.io import decode_png, png_bytes
from tests.conftest import read_rgb


def _pil(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_crop_and_grey_label_map_match_pil_and_are_writable():
    rgb = read_rgb("images/st_woman_B_happy1.png")[:200, :160]
    labels = (np.arange(200 * 160) % 11).astype(np.uint8).reshape(200, 160)
    for image in (rgb, labels):
        data = png_bytes(image)
        decoded = decode_png(data)
        assert decoded.dtype == np.uint8 and decoded.shape == image.shape
        assert np.array_equal(decoded, image) and np.array_equal(decoded, _pil(data))
        assert decoded.flags.writeable  # torch.from_numpy needs no copy


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "I;16"])  # alpha, palette, 16-bit grey
def test_other_pngs_decode_as_pil_decodes_them(mode: str):
    rgb = Image.fromarray(read_rgb("images/st_woman_B_happy1.png")[:64, :48])
    data = _png(rgb.convert(mode))
    assert np.array_equal(decode_png(data), _pil(data))


def test_a_damaged_png_is_an_error():
    data = png_bytes(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(OSError):
        decode_png(data[:40])
