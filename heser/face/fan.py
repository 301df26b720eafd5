"""FAN face backend: S3FD detection + 2D-FAN 68-point landmarks (the paper's choice).

Wraps the ``face_alignment`` package (Bulat & Tzimiropoulos). That package fetches its two
checkpoints from its author's site into the torch hub cache (``$TORCH_HOME/hub/checkpoints``,
by default ``~/.cache/torch/hub/checkpoints``) the first time it is constructed. We usually run
offline, so :class:`FanFace` first checks that both files are there and, if not, stops with a
:class:`FaceBackendError` that says which files to put where, instead of a network traceback.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from heser.face.types import Face, FaceBackendError

SCHEME = "ibug68"

# The URLs face_alignment 1.5.0 downloads from; used only when the installed package no longer
# exposes its own tables (the names are always read from the package when it does).
_FALLBACK_URLS = {
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    "s3fd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}

# What building the aligner raises when a download fails (urllib errors are OSErrors) or a
# checkpoint is truncated or foreign.
_BUILD_ERRORS = (OSError, RuntimeError, ValueError, EOFError, KeyError, AttributeError,
                 TypeError, ImportError, pickle.UnpicklingError)

# iBUG 68-point indices used to derive the five alignment points.
_EYE_A = slice(36, 42)  # the subject's right eye (image left on a frontal face)
_EYE_B = slice(42, 48)
_NOSE_TIP = 30
_MOUTH_A = 48
_MOUTH_B = 54


def checkpoint_dir() -> Path:
    """The folder face_alignment (and torch.hub) read cached checkpoints from."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def checkpoint_urls() -> dict[str, str]:
    """Model name -> download URL of every checkpoint the 2D FAN + S3FD setup loads."""
    urls = dict(_FALLBACK_URLS)
    try:
        from face_alignment import api
        from face_alignment.detection.sfd import sfd_detector
    except ImportError as exc:
        raise FaceBackendError(
            f"crop.backend 'fan' needs the face_alignment package ({exc}); install the "
            "project's dependencies or use crop.backend: mediapipe") from None
    urls["2DFAN-4"] = getattr(api, "models_urls", {}).get("2DFAN-4", urls["2DFAN-4"])
    urls["s3fd"] = getattr(sfd_detector, "models_urls", {}).get("s3fd", urls["s3fd"])
    return urls


def checkpoint_files() -> dict[str, str]:
    """Model name -> file name the package looks for in :func:`checkpoint_dir`."""
    return {model: os.path.basename(urlparse(url).path) for model, url in checkpoint_urls().items()}


def missing_checkpoints() -> list[Path]:
    """Paths of the required checkpoints that are not in the cache yet."""
    folder = checkpoint_dir()
    return [folder / name for name in checkpoint_files().values() if not (folder / name).is_file()]


def five_points_from_ibug68(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points of ``Face`` from 68 iBUG points, ordered by image x.

    Eyes are the means of points 36-41 and 42-47, the nose tip is point 30, the mouth corners are
    points 48 and 54; each pair is ordered so that the point on the image's left comes first.
    """
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2|3) iBUG landmarks, got {np.shape(landmarks)}")
    eyes = sorted((pts[_EYE_A].mean(axis=0), pts[_EYE_B].mean(axis=0)), key=lambda p: p[0])
    mouth = sorted((pts[_MOUTH_A], pts[_MOUTH_B]), key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], pts[_NOSE_TIP], mouth[0], mouth[1]]).astype(np.float32)


def _build_aligner(device: str, compile_net: bool, flip_input: bool, threshold: float):
    """Construct ``face_alignment.FaceAlignment`` for 2D landmarks with the S3FD detector."""
    import inspect

    import face_alignment

    types = face_alignment.LandmarksType
    two_d = types.TWO_D if hasattr(types, "TWO_D") else types._2D  # older releases: _2D
    kwargs = {"device": device, "flip_input": flip_input, "face_detector": "sfd",
              "face_detector_kwargs": {"filter_threshold": threshold}}
    if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
        kwargs["compile"] = compile_net
    return face_alignment.FaceAlignment(two_d, **kwargs)


class FanFace:
    """``FaceBackend`` "fan": every face in an image with 68 iBUG landmarks.

    ``allow_download=False`` (the default) never touches the network: missing checkpoints raise
    :class:`FaceBackendError`. ``compile`` asks face_alignment for ``torch.compile``; it is
    always off on CPU, where compiling costs far more than it saves.
    """

    name = "fan"

    def __init__(self, device: str = "cpu", *, allow_download: bool = False,
                 compile: bool = False, flip_input: bool = True,
                 detector_threshold: float = 0.5) -> None:
        files = checkpoint_files()  # also fails cleanly when face_alignment is not installed
        missing = missing_checkpoints()
        if missing and not allow_download:
            urls = checkpoint_urls()
            by_name = {os.path.basename(urlparse(u).path): u for u in urls.values()}
            listing = "\n".join(f"  - {p.name}  (from {by_name.get(p.name, '?')})"
                                for p in missing)
            raise FaceBackendError(
                "crop.backend 'fan' needs the face_alignment checkpoints, and these are missing "
                f"from {checkpoint_dir()}:\n{listing}\n"
                "Copy them there (the folder is $TORCH_HOME/hub/checkpoints; TORCH_HOME defaults "
                "to ~/.cache/torch), pass allow_download=True on a machine with internet, or use "
                "crop.backend: mediapipe, the offline default.")
        try:
            import face_alignment

            self._fa = _build_aligner(device, bool(compile) and device != "cpu", flip_input,
                                      detector_threshold)
        except FaceBackendError:
            raise
        except _BUILD_ERRORS as exc:  # network, corrupt file, wrong package version...
            what = "download or load" if missing else "load"
            raise FaceBackendError(
                f"could not {what} the face_alignment checkpoints ({sorted(files.values())} in "
                f"{checkpoint_dir()}): {type(exc).__name__}: {exc}. Put the files there by hand "
                "or use crop.backend: mediapipe, the offline default.") from None
        self.device = device
        self.version = (f"face_alignment-{getattr(face_alignment, '__version__', '?')}"
                        f"+{files['2DFAN-4']}+{files['s3fd']}")

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        image = _as_rgb(rgb)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No faces were detected")
            landmarks, _, boxes = self._fa.get_landmarks_from_image(image, return_bboxes=True)
        if not landmarks or boxes is None:
            return []
        height, width = image.shape[:2]
        faces = []
        for points, det in zip(landmarks, boxes):
            det = np.asarray(det, dtype=np.float64).reshape(-1)
            points = np.asarray(points, dtype=np.float32)[:, :2]
            if points.shape != (68, 2) or not np.all(np.isfinite(points)):
                continue
            box = np.array([np.clip(det[0], 0, width), np.clip(det[1], 0, height),
                            np.clip(det[2], 0, width), np.clip(det[3], 0, height)],
                           dtype=np.float32)
            score = float(det[4]) if det.size > 4 else 1.0
            faces.append(Face(box=box, score=score,
                              five_points=five_points_from_ibug68(points),
                              landmarks=np.ascontiguousarray(points), scheme=SCHEME))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(rgb)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    image = image[:, :, :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
