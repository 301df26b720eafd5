"""Offline MediaPipe face backend: BlazeFace detection, 468-point face mesh, selfie segmentation.

Runs the .tflite models shipped with the mediapipe 0.10.14 wheel through ``ai_edge_litert``;
the graph logic MediaPipe wraps around them (SSD anchors, box decoding, weighted NMS,
detection -> rotated ROI, landmark projection) is re-implemented here with numpy / cv2.

Naming: MediaPipe's keypoints are subject-centric ("right eye" = the subject's right eye, which
appears on the image's left for a frontal face). ``Face.five_points`` is image-centric (sorted
by image x), see ``heser.face.types``.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from heser.face.types import Face, FaceBackendError, box_intersections, box_iou

# --------------------------------------------------------------------------------------------
# Face-mesh topology (standard MediaPipe 468-point indices, subject-centric left/right).
# Contours are listed in drawing order, so each one is a valid polygon.
# --------------------------------------------------------------------------------------------
MESH_FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
# Subject's right eye (image left on a frontal face): lower lid 33 -> 133, upper lid back to 33.
MESH_RIGHT_EYE: tuple[int, ...] = (
    33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246,
)
MESH_LEFT_EYE: tuple[int, ...] = (
    263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466,
)
# Brows: lower edge outer -> inner, then upper edge inner -> outer.
MESH_RIGHT_BROW: tuple[int, ...] = (46, 53, 52, 65, 55, 107, 66, 105, 63, 70)
MESH_LEFT_BROW: tuple[int, ...] = (276, 283, 282, 295, 285, 336, 296, 334, 293, 300)
MESH_LIPS_OUTER: tuple[int, ...] = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)
MESH_LIPS_INNER: tuple[int, ...] = (
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)
# Nose outline: bridge sides from between the eyes down to the alae, round the nostrils and
# the columella (subnasale 2). Traced on the mesh, subject's right side first.
MESH_NOSE: tuple[int, ...] = (
    168, 193, 122, 188, 174, 236, 198, 209, 49, 64, 98, 97, 2, 326, 327, 294, 279, 429, 420,
    456, 399, 412, 351, 417,
)
MESH_NOSE_TIP = 1
MESH_MOUTH_CORNERS = (61, 291)
# The face oval's top (mid-forehead, where the hairline starts), its bottom (the chin) and its
# widest points at cheekbone height (subject's right, left).
MESH_OVAL_TOP = 10
MESH_CHIN = 152
MESH_OVAL_SIDES = (234, 454)
# Outer eye corners MediaPipe uses to orient the tracking ROI.
MESH_ROI_EYES = (33, 263)

MODEL_VERSION = "mediapipe-0.10.14"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept HxW, HxWx1, HxWx3 or HxWx4 uint8 and return a contiguous HxWx3 uint8 array."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _sigmoid(x: np.ndarray | float, clip: float = 100.0) -> np.ndarray:
    """Logistic with MediaPipe's score clipping (and no overflow warnings)."""
    x = np.clip(np.asarray(x, np.float64), -clip, clip)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _model_path(weights_dir: Path, name: str) -> Path:
    path = Path(weights_dir) / "mediapipe" / name
    if not path.is_file():
        raise FaceBackendError(
            f"MediaPipe model {name} not found at {path}; run the download stage "
            "(weights manifest) or point paths.weights at a folder holding mediapipe/*.tflite")
    return path


# LiteRT's C++ runtime writes this to stderr (fd 2) the first time a process applies its
# default XNNPACK delegate (in allocate_tensors). Its logger is not reachable from Python, and
# TF_CPP_MIN_LOG_LEVEL governs a different one, so the line is filtered out where it is made.
XNNPACK_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


@contextmanager
def without_xnnpack_notice() -> Iterator[None]:
    """Capture fd 2 for the block, then pass on everything written to it except
    ``XNNPACK_NOTICE``, so the runtime's real warnings and errors still reach stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = captured.read().replace(XNNPACK_NOTICE, b"")
            if rest:
                with os.fdopen(os.dup(2), "wb") as stderr:
                    stderr.write(rest)


class _TFLite:
    """One tflite model: input name/shape and outputs in a fixed, named order."""

    def __init__(self, path: Path, num_threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # pragma: no cover - environment problem
            raise FaceBackendError(
                "ai-edge-litert is not installed; `pip install ai-edge-litert` "
                "(see pyproject.toml)") from exc
        self.path = Path(path)
        with without_xnnpack_notice():
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
        inp = self.interpreter.get_input_details()[0]
        self.input_index = inp["index"]
        self.input_shape = tuple(int(v) for v in inp["shape"])  # (1, H, W, C)
        self.outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.output_shapes = {d["name"]: tuple(int(v) for v in d["shape"])
                              for d in self.interpreter.get_output_details()}

    @property
    def hw(self) -> tuple[int, int]:
        return self.input_shape[1], self.input_shape[2]

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        self.interpreter.set_tensor(self.input_index, tensor[None].astype(np.float32, copy=False))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(idx)[0] for name, idx in self.outputs.items()}

    def output_by_size(self, outputs: dict[str, np.ndarray], size: int) -> np.ndarray:
        """The output whose last dimension (or element count) is ``size``."""
        for value in outputs.values():
            if value.shape[-1] == size or value.size == size:
                return value
        raise FaceBackendError(f"{self.path.name}: no output of size {size}")


# --------------------------------------------------------------------------------------------
# SSD anchors and detection decoding (MediaPipe's SsdAnchorsCalculator / TensorsToDetections)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSpec:
    """Options MediaPipe's face-detection graphs give the anchor and decoding calculators."""

    model: str
    input_size: int
    strides: tuple[int, ...]
    num_layers: int
    interpolated_scale_aspect_ratio: float
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5
    num_keypoints: int = 6
    nms_iou: float = 0.3


SHORT_RANGE = DetectorSpec(
    model="face_detection_short_range.tflite", input_size=128, strides=(8, 16, 16, 16),
    num_layers=4, interpolated_scale_aspect_ratio=1.0)
FULL_RANGE = DetectorSpec(
    model="face_detection_full_range_sparse.tflite", input_size=192, strides=(4,),
    num_layers=1, interpolated_scale_aspect_ratio=0.0)


def _anchor_scale(min_scale: float, max_scale: float, index: int, num: int) -> float:
    if num == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (num - 1.0)


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """(N, 4) anchors (x_centre, y_centre, w, h), normalised, in the model's output order.

    Fixed anchor size (w = h = 1) as in MediaPipe's face detectors; consecutive layers with the
    same stride share one feature map, each layer adding an aspect-ratio-1 anchor plus, when
    ``interpolated_scale_aspect_ratio`` > 0, an interpolated-scale one.
    """
    strides = spec.strides
    anchors: list[np.ndarray] = []
    layer = 0
    while layer < spec.num_layers:
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1  # aspect ratio 1.0
            if spec.interpolated_scale_aspect_ratio > 0:
                per_cell += 1
            last += 1
        stride = strides[layer]
        fm = int(math.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        cx = (xs.ravel() + spec.anchor_offset) / fm
        cy = (ys.ravel() + spec.anchor_offset) / fm
        centres = np.repeat(np.stack([cx, cy], axis=1), per_cell, axis=0)
        anchors.append(np.concatenate([centres, np.ones_like(centres)], axis=1))
        layer = last
    return np.concatenate(anchors, axis=0).astype(np.float32)


def _overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box's area (catches a box nested inside another)."""
    inter, area, areas = box_intersections(box, boxes)
    return inter / np.maximum(np.minimum(area, areas), 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Detections are taken in decreasing score order; every remaining detection overlapping the
    best one by more than ``iou_threshold`` joins its cluster, and the cluster's box and
    keypoints are the score-weighted mean of its members (score: the best one's).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.arange(len(scores))
    out = []
    while remaining.size:
        best = remaining[0]
        overlap = box_iou(boxes[best], boxes[remaining]) > iou_threshold
        members = remaining[overlap]
        w = scores[members]
        wsum = float(w.sum())
        box = (boxes[members] * w[:, None]).sum(0) / wsum
        kps = (keypoints[members] * w[:, None, None]).sum(0) / wsum
        out.append((box, kps, float(scores[best])))
        remaining = remaining[~overlap]
    return out


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """Resize keeping aspect ratio and pad (zeros, centred) to size x size.

    Returns (padded, scale, pad_x, pad_y) with image pixel = (model pixel - pad) / scale.
    """
    h, w = rgb.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    out = np.zeros((size, size, 3), np.uint8)
    out[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    return out, scale, float(pad_x), float(pad_y)


# --------------------------------------------------------------------------------------------
# Rotated square ROIs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Roi:
    """A square region of the image: centre (pixels), side (pixels), rotation (radians).

    ``angle`` is the image-space direction of the ROI's x axis (atan2 of the eye line), so the
    warp rotates the image by -angle to make the eye line horizontal.
    """

    cx: float
    cy: float
    side: float
    angle: float

    def to_crop(self, size: int) -> np.ndarray:
        """2x3 affine image -> crop (size x size)."""
        s = size / max(self.side, 1e-6)
        c, si = math.cos(self.angle), math.sin(self.angle)
        # q = s * R(-angle) (p - centre) + size/2
        a = np.array([[c, si], [-si, c]]) * s
        t = np.array([size / 2.0, size / 2.0]) - a @ np.array([self.cx, self.cy])
        return np.hstack([a, t[:, None]]).astype(np.float64)

    def from_crop(self, pts: np.ndarray, size: int) -> np.ndarray:
        """Map (N, 2|3) crop points back to the image; z is scaled like x."""
        s = max(self.side, 1e-6) / size
        c, si = math.cos(self.angle), math.sin(self.angle)
        q = (pts[:, :2] - size / 2.0) * s
        x = self.cx + c * q[:, 0] - si * q[:, 1]
        y = self.cy + si * q[:, 0] + c * q[:, 1]
        out = [x, y]
        if pts.shape[1] > 2:
            out.append(pts[:, 2] * s)
        return np.stack(out, axis=1)


def roi_from_detection(box: np.ndarray, eye_a: np.ndarray, eye_b: np.ndarray,
                       scale: float = 1.5) -> Roi:
    """MediaPipe's face_detection_to_roi: box centre, side = scale x longer box side, rotated
    so the line from ``eye_a`` (image-left eye) to ``eye_b`` is horizontal."""
    x0, y0, x1, y1 = (float(v) for v in box)
    angle = math.atan2(float(eye_b[1] - eye_a[1]), float(eye_b[0] - eye_a[0]))
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, scale * max(x1 - x0, y1 - y0), angle)


def roi_from_landmarks(landmarks: np.ndarray, scale: float = 1.5) -> Roi:
    """MediaPipe's tracking ROI: the box enclosing the mesh in the frame aligned with the
    outer eye corners (33 -> 263), scaled and squared on its longer side."""
    a, b = landmarks[MESH_ROI_EYES[0], :2], landmarks[MESH_ROI_EYES[1], :2]
    angle = math.atan2(float(b[1] - a[1]), float(b[0] - a[0]))
    c, s = math.cos(angle), math.sin(angle)
    pts = landmarks[:, :2]
    u = pts[:, 0] * c + pts[:, 1] * s  # coordinates along the rotated axes
    v = -pts[:, 0] * s + pts[:, 1] * c
    uc, vc = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    side = scale * max(u.max() - u.min(), v.max() - v.min())
    return Roi(uc * c - vc * s, uc * s + vc * c, side, angle)


def five_points_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    """(5, 2) image-centric five points from a (468, 2|3) mesh: eye centres (mean of each eye
    contour), nose tip (1), mouth corners (61, 291), each pair sorted by image x."""
    pts = landmarks[:, :2].astype(np.float64)
    eye_r = pts[list(MESH_RIGHT_EYE)].mean(0)
    eye_l = pts[list(MESH_LEFT_EYE)].mean(0)
    eyes = sorted([eye_r, eye_l], key=lambda p: p[0])
    mouth = sorted([pts[MESH_MOUTH_CORNERS[0]], pts[MESH_MOUTH_CORNERS[1]]], key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], pts[MESH_NOSE_TIP], mouth[0], mouth[1]]).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------
class MediaPipeFace:
    """BlazeFace detector + face mesh. ``__call__(rgb) -> list[Face]`` (scheme mediapipe468).

    ``refine``: re-run the mesh once on the ROI recomputed from its own landmarks (MediaPipe's
    tracking ROI), which the mesh model was trained on; it steadies landmarks across frames.
    """

    name = "mediapipe"
    scheme = "mediapipe468"

    def __init__(self, weights_dir: Path, min_score: float = 0.5, full_range: bool = True,
                 *, refine: bool = True, min_presence: float = 0.5, num_threads: int = 1,
                 short_range_too: bool = True):
        self.weights_dir = Path(weights_dir)
        self.min_score = float(min_score)
        self.full_range = bool(full_range)
        self.refine = bool(refine)
        self.min_presence = float(min_presence)
        specs = [FULL_RANGE, SHORT_RANGE] if full_range and short_range_too else (
            [FULL_RANGE] if full_range else [SHORT_RANGE])
        self.spec = specs[0]
        self.detectors = [(spec, _TFLite(_model_path(self.weights_dir, spec.model), num_threads),
                           ssd_anchors(spec)) for spec in specs]
        for spec, model, anchors in self.detectors:
            n_boxes = max(shape[1] for shape in model.output_shapes.values())
            if n_boxes != len(anchors):
                raise FaceBackendError(f"{spec.model}: {n_boxes} boxes but {len(anchors)} anchors")
        self.mesh_model = _TFLite(_model_path(self.weights_dir, "face_landmark.tflite"),
                                  num_threads)
        self.mesh_size = self.mesh_model.hw[0]
        self.version = (f"{MODEL_VERSION}:{'+'.join(spec.model for spec in specs)}"
                        f"+face_landmark.tflite{'+refine' if self.refine else ''}")
        #: face-presence score of the last mesh run (see ``mesh``)
        self.last_presence: float = float("nan")

    # ---------------------------------------------------------------- detection
    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """BlazeFace alone: [(box x0,y0,x1,y1, keypoints (6,2), score)] in image pixels.

        Keypoints are MediaPipe's: subject's right eye, left eye, nose, mouth, right ear, left
        ear. With both models loaded, the full-range detections come first and short-range ones
        are added where they do not overlap one (the full-range model scores large, close faces
        low, the short-range model misses small ones)."""
        rgb = as_rgb(rgb)
        dets: list[tuple[np.ndarray, np.ndarray, float]] = []
        for spec, model, anchors in self.detectors:
            for det in self._detect_one(rgb, spec, model, anchors):
                if dets and _overlap(det[0], np.stack([d[0] for d in dets])).max() > 0.3:
                    continue
                dets.append(det)
        return dets

    def _detect_one(self, rgb: np.ndarray, spec: DetectorSpec, model: _TFLite,
                    anchors: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
        size = spec.input_size
        padded, scale, pad_x, pad_y = letterbox(rgb, size)
        tensor = padded.astype(np.float32) / 127.5 - 1.0
        out = model.run(tensor)
        raw = model.output_by_size(out, 4 + 2 * spec.num_keypoints)
        logits = model.output_by_size(out, 1).reshape(-1)
        scores = _sigmoid(logits)
        keep = np.flatnonzero(scores >= self.min_score)
        if keep.size == 0:
            return []
        raw, scores, anc = raw[keep], scores[keep], anchors[keep]
        # reverse_output_order: x, y, w, h; all scales = input size
        cx = raw[:, 0] / size * anc[:, 2] + anc[:, 0]
        cy = raw[:, 1] / size * anc[:, 3] + anc[:, 1]
        w = raw[:, 2] / size * anc[:, 2]
        h = raw[:, 3] / size * anc[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kp = raw[:, 4:4 + 2 * spec.num_keypoints].reshape(-1, spec.num_keypoints, 2)
        kp = kp / size * anc[:, None, 2:4] + anc[:, None, 0:2]
        dets = []
        for box, kps, score in weighted_nms(boxes, kp, scores, spec.nms_iou):
            box = (box * size - np.array([pad_x, pad_y, pad_x, pad_y])) / scale
            kps = (kps * size - np.array([pad_x, pad_y])) / scale
            if box[2] - box[0] <= 1 or box[3] - box[1] <= 1:
                continue
            dets.append((box.astype(np.float32), kps.astype(np.float32), score))
        return dets

    # ---------------------------------------------------------------- mesh
    def mesh(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """Run the face mesh on ``roi``: ((468, 3) float32 image-pixel landmarks, presence)."""
        size = self.mesh_size
        rgb = as_rgb(rgb)
        crop = cv2.warpAffine(rgb, roi.to_crop(size), (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        out = self.mesh_model.run(crop.astype(np.float32) / 255.0)
        pts = self.mesh_model.output_by_size(out, 468 * 3).reshape(468, 3)
        presence = float(_sigmoid(self.mesh_model.output_by_size(out, 1).reshape(-1)[0]))
        self.last_presence = presence
        return roi.from_crop(pts, size).astype(np.float32), presence

    def _mesh_refined(self, rgb: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        landmarks, presence = self.mesh(rgb, roi)
        if self.refine and presence >= self.min_presence:
            refined, presence2 = self.mesh(rgb, roi_from_landmarks(landmarks))
            if presence2 >= self.min_presence:
                return refined, presence2
        return landmarks, presence

    def mesh_from_five_points(self, rgb: np.ndarray, five_points: np.ndarray) -> np.ndarray:
        """(468, 3) mesh of the face whose five points (image-centric order) are given.

        For an already aligned crop: the ROI is derived from the eyes and the mouth instead of
        a detection (then refined from the landmarks as in tracking)."""
        rgb = as_rgb(rgb)
        roi = roi_from_five_points(np.asarray(five_points, np.float64))
        landmarks, _ = self._mesh_refined(rgb, roi)
        return landmarks

    # ---------------------------------------------------------------- FaceBackend
    def faces_with_presence(self, rgb: np.ndarray) -> list[tuple[Face, float]]:
        """Every face with its face-mesh presence score (faces the mesh rejects, presence
        below ``min_presence``, are dropped), largest first."""
        rgb = as_rgb(rgb)
        found: list[tuple[Face, float]] = []
        mesh_boxes: list[np.ndarray] = []
        for box, kps, score in self.detect(rgb):
            roi = roi_from_detection(box, kps[0], kps[1])
            landmarks, presence = self._mesh_refined(rgb, roi)
            if presence < self.min_presence:
                continue
            # Two detections whose meshes landed on the same face (a partial-face detection
            # converges onto the whole face once the ROI is refined): keep the first.
            mbox = np.concatenate([landmarks[:, :2].min(0), landmarks[:, :2].max(0)])
            if mesh_boxes and _overlap(mbox, np.stack(mesh_boxes)).max() > 0.5:
                continue
            mesh_boxes.append(mbox)
            face = Face(box=box, score=score, five_points=five_points_from_mesh(landmarks),
                        landmarks=landmarks, scheme=self.scheme)
            found.append((face, presence))
        found.sort(key=lambda item: -item[0].area)
        return found

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        return [face for face, _ in self.faces_with_presence(rgb)]


# ROI from five points, calibrated on the 45 real sample faces against the tracking ROI
# (roi_from_landmarks): its centre lies FIVE_CENTRE of the way from the eye midpoint to the
# mouth midpoint (median 0.46, quartiles 0.41-0.48) and its side is FIVE_SIDE x (eye distance
# + eye-to-mouth distance) (median ratio 1.95).
FIVE_CENTRE = 0.45
FIVE_SIDE = 1.95


def roi_from_five_points(five_points: np.ndarray) -> Roi:
    """Mesh ROI from image-centric five points (eyes, nose, mouth corners)."""
    pts = np.asarray(five_points, np.float64)
    eye_a, eye_b = pts[0], pts[1]
    eye_mid = (eye_a + eye_b) / 2
    mouth_mid = (pts[3] + pts[4]) / 2
    angle = math.atan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0])
    centre = eye_mid + FIVE_CENTRE * (mouth_mid - eye_mid)
    extent = float(np.linalg.norm(eye_b - eye_a)) + float(np.linalg.norm(mouth_mid - eye_mid))
    return Roi(float(centre[0]), float(centre[1]), FIVE_SIDE * extent, angle)


# --------------------------------------------------------------------------------------------
# Selfie segmentation
# --------------------------------------------------------------------------------------------
class SelfieSegmenter:
    """Person probability map from MediaPipe's general selfie-segmentation model (256x256)."""

    name = "mediapipe-selfie"

    def __init__(self, weights_dir: Path, num_threads: int = 1):
        self.model = _TFLite(_model_path(Path(weights_dir), "selfie_segmentation.tflite"),
                             num_threads)
        self.version = f"{MODEL_VERSION}:selfie_segmentation.tflite"

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 HxW person probability in [0, 1] at the input's resolution."""
        rgb = as_rgb(rgb)
        h, w = rgb.shape[:2]
        mh, mw = self.model.hw
        interp = cv2.INTER_AREA if (h > mh or w > mw) else cv2.INTER_LINEAR
        tensor = cv2.resize(rgb, (mw, mh), interpolation=interp).astype(np.float32) / 255.0
        out = next(iter(self.model.run(tensor).values()))[:, :, 0]
        # The model ends in a sigmoid ("activation_10"); its output is already a probability.
        prob = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
        return np.clip(prob, 0.0, 1.0).astype(np.float32)
