"""A driver's head pose and expression as a few numbers read off its 3-D landmarks.

The aligner's landmark motion input (``aligner.motion_input: landmarks``, a deviation from the
paper's E_pose/E_exp on images) animates the sources from these instead of from the driver's
pixels. Sixteen numbers cannot carry a face's colour, hair or background, and carry little of
its shape, so the driver's identity has no wide road into I_A:

* pose (9): the head's rotation as the first two axes of a head frame built from the landmarks
  (the 6-D rotation representation; x from the outer eye corners, y from the chin to the nose
  bridge), the head's centre in the crop (2, in [-1, 1]) and log of its size (inter-ocular
  distance over the crop size);
* expression (7), in the head frame and inter-ocular units: mouth opening and width, mouth
  corners above or below the lip centre (a smile), each eye's opening, each brow's height over
  its eye.

Mirror-image points (the subject's right and left) keep the scheme's own order: mediapipe468
lists the subject's right eye first (33), iBUG 68 too (36).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from heser.metrics import landmark_scheme

MOTION_FEATURES = 16  # 9 pose + 7 expression


@dataclass(frozen=True)
class MotionPoints:
    """The landmark indices the features read, per scheme."""

    outer_eye_corners: tuple[int, int]   # subject's right, left
    nose_bridge: int                     # between the eyes
    chin: int
    inner_lips: tuple[int, int]          # upper, lower midpoints
    mouth_corners: tuple[int, int]
    right_eyelids: tuple[int, int]       # upper, lower midpoints
    left_eyelids: tuple[int, int]
    brows: tuple[int, int]               # right, left midpoints


POINTS = {
    "mediapipe468": MotionPoints((33, 263), 168, 152, (13, 14), (61, 291), (159, 145),
                                 (386, 374), (105, 334)),
    "ibug68": MotionPoints((36, 45), 27, 8, (62, 66), (48, 54), (37, 41), (44, 46), (19, 24)),
}
SCHEME_OF_SIZE = {468: "mediapipe468", 68: "ibug68"}


def _unit(vector: np.ndarray, what: str) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm < 1e-6:
        raise ValueError(f"degenerate landmarks: the {what} has no length")
    return vector / norm


def head_frame(landmarks: np.ndarray, points: MotionPoints) -> np.ndarray:
    """3x3 rotation whose rows are the head's x (towards the subject's left eye), y (from the
    chin up to the nose bridge, made orthogonal to x) and z axes in crop coordinates."""
    right, left = (landmarks[i] for i in points.outer_eye_corners)
    x = _unit(left - right, "eye-corner axis")
    up = landmarks[points.nose_bridge] - landmarks[points.chin]
    y = _unit(up - np.dot(up, x) * x, "chin-to-nose-bridge axis")
    return np.stack([x, y, np.cross(x, y)])


def motion_features(landmarks: np.ndarray, crop_size: int, scheme: str | None = None
                    ) -> np.ndarray:
    """float32 [MOTION_FEATURES] of one face's 3-D landmarks (crop pixels, as the shards and
    the cropper give them). ``scheme`` None: read off the number of points."""
    spec = landmark_scheme(landmarks, scheme)
    points = POINTS[SCHEME_OF_SIZE[spec.n_points]]
    marks = np.asarray(landmarks, np.float64)
    if not np.isfinite(marks).all():
        raise ValueError("landmarks contain NaN or infinity")
    frame = head_frame(marks, points)
    right, left = (marks[i] for i in points.outer_eye_corners)
    inter_ocular = float(np.linalg.norm(left - right))
    centre = (right + left + marks[points.chin]) / 3
    local = (marks - centre) @ frame.T / inter_ocular  # head frame, inter-ocular units

    def gap(pair: tuple[int, int]) -> float:
        return float(local[pair[0], 1] - local[pair[1], 1])

    eye_height = [(local[a, 1] + local[b, 1]) / 2
                  for a, b in (points.right_eyelids, points.left_eyelids)]
    lip_centre = (local[points.inner_lips[0], 1] + local[points.inner_lips[1], 1]) / 2
    corners = [local[i, 1] for i in points.mouth_corners]
    pose = [*frame[0], *frame[1], *(centre[:2] / crop_size * 2 - 1),
            np.log(inter_ocular / crop_size)]
    expression = [
        gap(points.inner_lips),                                          # mouth opening
        float(local[points.mouth_corners[1], 0] - local[points.mouth_corners[0], 0]),  # width
        float(np.mean(corners) - lip_centre),                            # smile
        gap(points.right_eyelids), gap(points.left_eyelids),             # eye openings
        float(local[points.brows[0], 1] - eye_height[0]),                # brow heights
        float(local[points.brows[1], 1] - eye_height[1]),
    ]
    return np.asarray(pose + expression, np.float32)
