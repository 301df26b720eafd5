"""Reading images and video frames robustly, with errors that name the file and the problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


class MediaError(ValueError):
    """An input cannot be used; the message names the file and the problem."""


@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # as the container claims it
    width: int
    height: int
    frames_read: int = 0
    truncated: bool = False
    notes: list[str] = field(default_factory=list)


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
    _check_size(path, image.shape[1], image.shape[0], min_side)
    return to_rgb8(image, path)


def _check_size(path: Path, width: int, height: int, min_side: int) -> None:
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


class VideoReader:
    """Sampled frames of one video; ``info`` is filled as frames are read.

    Opening checks the file (missing, zero bytes, unreadable container); reading notes a stream
    that ends before the frame count the container declares (a truncated file).
    """

    def __init__(self, path: Path, min_side: int = 1) -> None:
        self.path = Path(path)
        check_file(self.path)
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise MediaError(f"{self.path}: not a readable video "
                             "(corrupt, truncated or unsupported container)")
        self.info = VideoInfo(
            fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count=int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
            width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        capture.release()
        _check_size(self.path, self.info.width, self.info.height, min_side)

    def frames(self, stride: int, max_frames: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, RGB frame) for every ``stride``-th frame, at most ``max_frames``."""
        capture = cv2.VideoCapture(str(self.path))
        info = self.info
        index, yielded = 0, 0
        try:
            while yielded < max_frames:
                if index % stride == 0:
                    ok, frame = capture.read()
                    if not ok:
                        break
                    yielded += 1
                    info.frames_read = index + 1
                    yield index, to_rgb8(frame, self.path)[0]
                elif capture.grab():
                    info.frames_read = index + 1
                else:
                    break
                index += 1
        finally:
            capture.release()
        if info.frames_read == 0:
            raise MediaError(f"{self.path}: video has no decodable frames")
        wanted = min(info.frame_count, stride * (max_frames - 1) + 1)
        if yielded < max_frames and info.frames_read < wanted:
            info.truncated = True
            info.notes.append(f"truncated: stream ended at frame {info.frames_read} of "
                              f"{info.frame_count} the container declares")
