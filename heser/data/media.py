"""Reading images robustly, with errors that name the file and the problem; what every reader
checks first (:func:`check_file`). Videos are read by :mod:`heser.data.video_io`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


class MediaError(ValueError):
    """An input cannot be used; the message names the file and the problem."""


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def check_file(path: Path) -> None:
    """MediaError for a missing or zero-byte file, before any decoder sees it."""
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: zero-byte file")


def read_image(path: Path, min_side: int) -> tuple[np.ndarray, list[str]]:
    """RGB uint8 image plus notes on the conversions applied (grayscale, alpha, 16-bit...)."""
    path = Path(path)
    check_file(path)
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise MediaError(f"{path}: not a readable image (corrupt or unsupported format)")
    check_size(path, image.shape[1], image.shape[0], min_side)
    return to_rgb8(image, path)


def check_size(path: Path, width: int, height: int, min_side: int) -> None:
    """MediaError for a picture or video smaller than ``min_side`` (crop.min_image_side)."""
    if min(width, height) < min_side:
        raise MediaError(f"{path}: image too small ({width}x{height}; at least {min_side} px "
                         "a side, crop.min_image_side)")


def to_rgb8(image: np.ndarray, path: Path | str = "<array>") -> tuple[np.ndarray, list[str]]:
    """Convert any OpenCV-decoded image (BGR order) to RGB uint8, recording what was done."""
    notes: list[str] = []
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
        notes.append("16-bit converted to 8-bit")
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * 255.0, 0, 255).astype(np.uint8)
        notes.append("float converted to 8-bit")
    elif image.dtype != np.uint8:
        raise MediaError(f"{path}: unsupported pixel type {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
        notes.append("grayscale expanded to RGB")
    elif image.shape[2] == 4:
        # Composite on mid-grey: transparent areas become neutral background, not black.
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bgr = image[:, :, :3].astype(np.float32) * alpha + 127.5 * (1 - alpha)
        image = cv2.cvtColor(bgr.round().astype(np.uint8), cv2.COLOR_BGR2RGB)
        notes.append("alpha composited on grey")
    else:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image), notes
