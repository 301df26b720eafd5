"""The interfaces every face backend implements, and the values they exchange."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


class FaceBackendError(RuntimeError):
    """A backend cannot run (missing weights, missing package); the message says what to do."""


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates (x right, y down).

    ``five_points`` are, in this order: the eye on the image's left, the eye on the image's
    right, the nose tip, the mouth corner on the image's left, the mouth corner on the image's
    right. Every backend fills them; the crop is built from them alone, so crops do not depend on
    which backend found the face. ``landmarks`` are the backend's own points (``scheme`` names
    them: ``mediapipe468`` = (468, 3) face mesh with z in pixels, ``ibug68`` = (68, 2 or 3)).
    """

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    five_points: np.ndarray  # (5, 2)
    landmarks: np.ndarray  # (N, 2|3)
    scheme: str

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, 0.0) * max(y1 - y0, 0.0))

    @property
    def size(self) -> float:
        """Side of the face box in pixels (its longer side)."""
        x0, y0, x1, y1 = self.box
        return float(max(x1 - x0, y1 - y0))


def box_intersections(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Intersection areas of one (4,) x0,y0,x1,y1 box with (N, 4) boxes, and both areas."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter, area, areas


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    inter, area, areas = box_intersections(box, boxes)
    return inter / np.maximum(area + areas - inter, 1e-12)


class FaceBackend(Protocol):
    """Finds every face in an RGB uint8 image, each with landmarks."""

    name: str
    version: str

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...


class FaceParser(Protocol):
    """Turns an aligned RGB crop (and its landmarks) into a HeSer label map (see labels.py)."""

    name: str
    version: str

    def __call__(self, crop_rgb: np.ndarray, landmarks: np.ndarray, scheme: str) -> np.ndarray: ...
