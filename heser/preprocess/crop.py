"""The crop stage on one video or photo: the one cropper (:mod:`heser.face.cropper`) picks the
face, the window is smoothed over the sampled frames, and the crops are stored.

Output: one tar per input (WebDataset layout) with, per kept frame, ``<key>.img.png`` (the
aligned crop), ``<key>.lmk.npy`` (the backend's landmarks in crop pixels) and ``<key>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import heser
from heser.config import Config
from heser.data.media import MediaError, read_image
from heser.data.shards import tar_writer
from heser.data.video_io import VideoReader
from heser.face.align import CropWindow, inside_fraction, transform_points
from heser.face.cropper import Cropper, choose_face
from heser.face.types import Face, FaceBackend
from heser.io import atomic_path, npy_bytes, png_bytes
from heser.preprocess.items import MediaItem, sample_key
from heser.rejects import Reject

STAGE = "crop"


@dataclass
class ItemResult:
    """What one input produced: samples written, and the frames skipped or kept by policy."""

    file: str
    samples: int = 0
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class _Detection:
    frame: int
    face: Face
    n_faces: int


class _Detector:
    """Per-frame detection with the reject policy applied (no face, too small, several)."""

    def __init__(self, item: MediaItem, cropper: Cropper, result: ItemResult):
        self.item, self.cropper, self.result = item, cropper, result
        self.previous: Face | None = None

    def __call__(self, frame: int, rgb: np.ndarray) -> _Detection | None:
        faces = self.cropper.detect(rgb)
        if not faces:
            return self._reject(frame, "no face found")
        face = choose_face(faces, self.previous)
        too_small = self.cropper.too_small(face)
        if too_small:
            return self._reject(frame, too_small)
        if len(faces) > 1:
            self.result.rejects.append(Reject(STAGE, self.item.file, frame,
                                              f"{len(faces)} faces found", "kept-largest"
                                              if self.previous is None else "kept-tracked"))
        self.previous = face
        return _Detection(frame, face, len(faces))

    def _reject(self, frame: int, reason: str) -> None:
        self.result.rejects.append(Reject(STAGE, self.item.file, frame, reason))


def _windows(detections: list[_Detection | None], cropper: Cropper,
             sigma: float) -> dict[int, CropWindow]:
    """Crop windows of the kept frames, smoothed within runs of consecutive kept frames."""
    faces = [None if d is None else d.face for d in detections]
    return {d.frame: window for d, window in zip(detections, cropper.windows(faces, sigma))
            if d is not None}


def _sample(item: MediaItem, video_key: str, detection: _Detection, window: CropWindow,
            rgb: np.ndarray, cropper: Cropper, cfg: Config, notes: list[str],
            fps: float) -> dict[str, object]:
    cropped = cropper.warp(rgb, detection.face, window)
    face, matrix, backend = cropped.face, cropped.matrix, cropper.backend
    key = sample_key(video_key, detection.frame)
    meta = {
        "key": key, "identity": item.identity, "video": video_key.split("__")[1],
        "frame": detection.frame, "source_file": item.file, "source_sha256": item.sha256,
        "kind": item.kind, "fps": fps, "source_size": [int(rgb.shape[1]), int(rgb.shape[0])],
        "crop_size": cfg.crop.size, "window": window.as_list(),
        "inside_fraction": inside_fraction(window, rgb.shape), "matrix": matrix.tolist(),
        "five_points": transform_points(face.five_points, matrix).tolist(),
        "scheme": face.scheme, "score": face.score, "n_faces": detection.n_faces,
        "backend": {"name": backend.name, "version": backend.version}, "notes": notes,
        "heser_version": heser.__version__,
    }
    return {
        "__key__": key,
        "img.png": png_bytes(cropped.image, source_type="algorithmicallyEnhanced",
                             source=item.file),
        "lmk.npy": npy_bytes(transform_points(face.landmarks, matrix)),
        "json": json.dumps(meta).encode(),
    }


def crop_item(item: MediaItem, backend: FaceBackend, cfg: Config, out_tar: Path) -> ItemResult:
    """Crop every kept frame of ``item`` into ``out_tar`` (written atomically, even if empty)."""
    result = ItemResult(item.file)
    try:
        samples = list(_crop_samples(item, backend, cfg, result))
    except MediaError as exc:
        result.rejects.append(Reject(STAGE, item.file, -1, str(exc)))
        samples = []
    with atomic_path(out_tar) as tmp, tar_writer(tmp) as sink:
        for sample in samples:
            sink.write(sample)
    result.samples = len(samples)
    if not samples and not any(r.frame == -1 for r in result.rejects):
        result.rejects.append(Reject(STAGE, item.file, -1, "no frame kept"))
    return result


def _crop_samples(item: MediaItem, backend: FaceBackend, cfg: Config, result: ItemResult):
    cropper = Cropper(backend, cfg.crop)
    detector = _Detector(item, cropper, result)
    video_key = item.video_key
    sigma = cfg.crop.video.smooth_sigma
    if item.kind == "image":
        rgb, notes = read_image(item.path, cfg.crop.min_image_side)
        detection = detector(0, rgb)
        if detection is not None:
            window = _windows([detection], cropper, sigma)[0]
            yield _sample(item, video_key, detection, window, rgb, cropper, cfg, notes, 0.0)
        return
    reader = VideoReader(item.path, cfg.crop.min_image_side)
    sampling = cfg.crop.video
    detections = [detector(frame, rgb) for frame, rgb in reader.frames(sampling.stride,
                                                                      sampling.max_frames)]
    if reader.info.truncated:
        result.rejects.append(Reject(STAGE, item.file, reader.info.frames_read,
                                     reader.info.notes[-1], "kept-frames-before"))
    windows = _windows(detections, cropper, sigma)
    by_frame = {d.frame: d for d in detections if d is not None}
    # Second pass: decode again rather than hold every sampled full-resolution frame in memory.
    for frame, rgb in VideoReader(item.path).frames(sampling.stride, sampling.max_frames):
        if frame in windows:
            yield _sample(item, video_key, by_frame[frame], windows[frame], rgb, cropper, cfg,
                          reader.info.notes, reader.info.fps)
