"""The one cropper: from an RGB frame to the aligned head crop, the same way everywhere.

The crop stage (and through it the Prefect flow), `heser swap` (sources and targets) and
`heser finetune` all cut their crops here:

1. detect every face (on a copy no larger than ``crop.max_image_side``; coordinates in full
   resolution);
2. choose one by the several-faces policy (:func:`choose_face`: the largest, or in a video the
   one overlapping the face kept in the previous frame);
3. reject a face smaller than ``crop.min_face_px``;
4. compute the crop window, FFHQ-style from the eyes and mouth (``crop.scale``,
   ``crop.center_shift``; :func:`heser.face.align.window_from_points`), optionally smoothed
   over runs of consecutive frames of a video (:meth:`Cropper.windows`);
5. warp the window to a ``crop.size`` square.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from heser.config import Crop
from heser.face.align import CropWindow, smooth_windows, warp_crop, window_from_points
from heser.face.types import Face, FaceBackend, box_iou


class CropError(ValueError):
    """No usable face in a picture; the message names the file and the problem."""


@dataclass(frozen=True)
class CroppedFace:
    """One aligned crop and how it was cut."""

    image: np.ndarray  # uint8 RGB, crop.size x crop.size
    matrix: np.ndarray  # 2x3 affine, source pixels -> crop pixels
    face: Face  # in source pixels
    window: CropWindow


def choose_face(faces: list[Face], previous: Face | None) -> Face:
    """Policy for several faces: the largest, or in a video the one that overlaps the face
    kept in the previous sampled frame (so a passer-by never steals the track)."""
    if previous is not None:
        overlaps = box_iou(previous.box, np.stack([face.box for face in faces]))
        if max(overlaps) > 0.3:
            return faces[int(np.argmax(overlaps))]
    return max(faces, key=lambda face: face.area)


def _rescale(face: Face, factor: float) -> Face:
    landmarks = face.landmarks * factor
    return Face(face.box * factor, face.score, face.five_points * factor, landmarks, face.scheme)


class Cropper:
    """A face backend and the ``crop`` parameters: detection, choice, size check, window, warp."""

    def __init__(self, backend: FaceBackend, params: Crop):
        self.backend, self.params = backend, params

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Every face, found on a copy no larger than crop.max_image_side."""
        scale = self.params.max_image_side / max(rgb.shape[:2])
        if scale >= 1:
            return self.backend(rgb)
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return [_rescale(face, 1 / scale) for face in self.backend(small)]

    def too_small(self, face: Face) -> str | None:
        """Why ``face`` cannot be used (smaller than crop.min_face_px), or None."""
        if face.size < self.params.min_face_px:
            return (f"face too small ({face.size:.0f} px < crop.min_face_px "
                    f"{self.params.min_face_px})")
        return None

    def window(self, face: Face) -> CropWindow:
        return window_from_points(face.five_points, self.params.scale, self.params.center_shift)

    def windows(self, faces: Sequence[Face | None], sigma: float) -> list[CropWindow | None]:
        """Windows of a sequence of frames (None: no face kept), Gaussian-smoothed over each run
        of consecutive frames with a face (``sigma`` in frames; 0 = off)."""
        windows: list[CropWindow | None] = [None] * len(faces)
        start = 0
        while start < len(faces):
            if faces[start] is None:
                start += 1
                continue
            end = start
            while end < len(faces) and faces[end] is not None:
                end += 1
            raw = [self.window(face) for face in faces[start:end]]
            windows[start:end] = smooth_windows(raw, sigma)
            start = end
        return windows

    def warp(self, rgb: np.ndarray, face: Face, window: CropWindow | None = None) -> CroppedFace:
        """The crop of ``face`` (through ``window``, its own unsmoothed one by default)."""
        window = window or self.window(face)
        image, matrix = warp_crop(rgb, window, self.params.size)
        return CroppedFace(image, matrix, face, window)

    def crop_photo(self, rgb: np.ndarray, path: Path | str,
                   notes: list[str] | None = None) -> CroppedFace:
        """The subject of a photo: its largest face, as the crop stage crops a picture. Raises
        CropError naming ``path`` when there is no face or it is too small; a note for several."""
        faces = self.detect(rgb)
        if not faces:
            raise CropError(f"{path}: no face found")
        face = choose_face(faces, None)
        reason = self.too_small(face)
        if reason:
            raise CropError(f"{path}: {reason}")
        if len(faces) > 1 and notes is not None:
            notes.append(f"{path}: {len(faces)} faces found; the largest is the subject")
        return self.warp(rgb, face)
