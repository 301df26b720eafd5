"""Stability of a swapped video against its target video, from the two files.

Each frame pair is measured in crop space: the target frame's face is found and cropped
(heser.face.cropper, its own window, smoothed over the clip with ``swap.smooth_sigma`` as `heser
swap` does), and the swapped frame is cut through the same window, so both clips are seen
through identical crops. In them: flicker inside the target's dilated head dil(M_T^H) (the
region the swap may change), FaceRes's cosine to the sources and its spread, and landmark
jitter, each next to the target clip's own (``heser.metrics.clip_stability``). Frames where the
target has no face are left out and counted. The same numbers as `evaluate`'s video section,
which works on the shards' crops directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from heser import metrics
from heser.config import Config
from heser.data.masks import dilate, dilation_radius, head_mask
from heser.data.video_io import read_frames
from heser.face.backends import make_face_backend, make_parser
from heser.face.cropper import Cropper, choose_face
from heser.face.types import Face
from heser.nets.faceres import load_faceres


def _face_landmarks(backend, crop: np.ndarray) -> tuple[np.ndarray, str] | None:
    faces = backend(crop)
    if not faces:
        return None
    face = choose_face(faces, None)
    return face.landmarks, face.scheme


def video_stability(cfg: Config, target: Path, swapped: Path, source_crops: list[np.ndarray],
                    max_frames: int | None = None) -> dict[str, float | dict[str, float]]:
    """{"frames", "frames_without_face", "swapped": {flicker, identity_spread,
    faceres_cosine, landmark_jitter}, "target": {...}} of the first ``max_frames`` frames (all
    by default) of ``swapped`` against ``target``; ``source_crops``: the sources' head crops
    (uint8 RGB at crop.size), FaceRes's reference identity."""
    weights = cfg.path(cfg.paths.weights)
    backend, parser = make_face_backend(cfg, weights), make_parser(cfg, weights)
    cropper = Cropper(backend, cfg.crop)
    faceres = load_faceres(weights)
    pairs, faces, previous = [], [], None
    for index, (target_rgb, swapped_rgb) in enumerate(zip(read_frames(target),
                                                          read_frames(swapped))):
        if index == max_frames:
            break
        found = cropper.detect(target_rgb)
        face: Face | None = choose_face(found, previous) if found else None
        previous = face or previous
        pairs.append((target_rgb, swapped_rgb))
        faces.append(face)
    windows = cropper.windows(faces, cfg.swap.smooth_sigma)
    targets, swaps, regions, target_marks, swapped_marks = [], [], [], [], []
    radius = dilation_radius(cfg.masks.dilation, cfg.crop.size)
    for (target_rgb, swapped_rgb), face, window in zip(pairs, faces, windows):
        if face is None or window is None:
            continue
        target_crop = cropper.warp(target_rgb, face, window).image
        landmarks = _face_landmarks(backend, target_crop)
        if landmarks is None:
            continue
        labels = parser(target_crop, *landmarks)
        head = dilate(head_mask(torch.from_numpy(labels)[None]), radius)[0, 0].numpy() > 0.5
        swapped_crop = cropper.warp(swapped_rgb, face, window).image
        found = _face_landmarks(backend, swapped_crop)
        targets.append(target_crop)
        swaps.append(swapped_crop)
        regions.append(head)
        target_marks.append(landmarks[0])
        swapped_marks.append(None if found is None else found[0])
    result: dict[str, float | dict[str, float]] = {
        "frames": float(len(swaps)), "frames_without_face": float(len(pairs) - len(swaps))}
    if not swaps:
        return result
    sources = faceres.identity_descriptor(np.stack(source_crops))
    cosines = [metrics.cosine_to_mean(faceres.identity_descriptor(np.stack(frames)), sources)
               for frames in (swaps, targets)]
    result.update(metrics.clip_stability(np.stack(swaps), np.stack(targets), np.stack(regions),
                                         swapped_marks, target_marks, *cosines))
    return result


def stability_summary(numbers: dict[str, float | dict[str, float]]) -> str:
    """One line per number, the swapped clip's beside the target's own."""
    lines = [f"video stability over {numbers['frames']:.0f} frames "
             f"({numbers['frames_without_face']:.0f} without a face left out):"]
    if "swapped" in numbers:
        for key, swapped in numbers["swapped"].items():
            lines.append(f"  {key}: {swapped:.4g} (target's own: {numbers['target'][key]:.4g})")
    return "\n".join(lines)
