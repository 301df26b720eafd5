"""`heser swap` on whole pictures and videos: find the faces, cut the crops exactly as the crop
stage does, swap each target crop (:class:`heser.swap.Swapper`), paste I_B back into the
full-resolution frame through the inverse of the crop transform, feathered.

Several faces in a target: ``swap.several_faces: error`` (the default) stops and lists them,
numbered left to right, so the user picks one with ``--target-face N``; ``largest`` takes the
largest. In a video the choice is made on the first frame with a face and then tracked (the
face overlapping the previous frame's). Frames without a face pass through unchanged and are
counted. Several faces in a source photo: the largest is the subject.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from heser import __version__
from heser.config import Config
from heser.data.media import check_file, is_video, read_image
from heser.data.video_io import VideoWriter, probe_video, read_frames, save_image
from heser.face.align import (
    CropWindow,
    paste_crop,
    smooth_windows,
    transform_points,
    warp_crop,
    window_from_points,
)
from heser.face.types import Face
from heser.imaging import resize, to_uint8
from heser.preprocess.crop import choose_face, detect
from heser.swap import SwapError, Swapper, finetuned_aligner, paste_alpha
from heser.train.checkpoint import load_checkpoint

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg")
VIDEO_OUTPUTS = (".mp4",)


@dataclass
class SwapReport:
    output: Path
    frames: int = 0
    swapped: int = 0
    no_face: int = 0  # frames passed through unchanged
    animated_fallback: int = 0  # frames whose I_A was parsed with the target's landmarks
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        text = (f"{self.output}: {self.swapped} of {self.frames} frames swapped, {self.no_face} "
                f"without a face passed through ({self.seconds:.1f} s, {fps:.2f} frames/s)")
        if self.animated_fallback:
            text += (f"; {self.animated_fallback} animated heads parsed with the target's "
                     "landmarks (no face found in I_A)")
        return "\n".join([text, *self.notes])


def _window(cfg: Config, face: Face) -> CropWindow:
    return window_from_points(face.five_points, cfg.crop.scale, cfg.crop.center_shift)


def source_crops(cfg: Config, swapper: Swapper, paths: list[Path],
                 notes: list[str]) -> list[np.ndarray]:
    """Each source photo's head crop, cut as the crop stage cuts it."""
    crops = []
    for path in paths:
        if is_video(path):
            raise SwapError(f"{path}: sources must be photos (extract frames from a video)")
        rgb, _ = read_image(path, cfg.crop.min_image_side)
        faces = detect(swapper.backend, rgb, cfg.crop.max_image_side)
        if not faces:
            raise SwapError(f"{path}: no face found in this source photo")
        face = max(faces, key=lambda f: f.area)
        if len(faces) > 1:
            notes.append(f"{path}: {len(faces)} faces found; the largest is the subject")
        crops.append(warp_crop(rgb, _window(cfg, face), cfg.crop.size)[0])
    return crops


def pick_target_face(faces: list[Face], path: Path, policy: str, number: int | None) -> Face:
    """The target face by the several-faces policy; ``number`` counts from 1, left to right."""
    ordered = sorted(faces, key=lambda f: float(f.box[0]))
    if number is not None:
        if not 1 <= number <= len(ordered):
            raise SwapError(f"{path}: --target-face {number}, but the target has "
                            f"{len(ordered)} face(s) (numbered 1..{len(ordered)} left to right)")
        return ordered[number - 1]
    if len(ordered) == 1 or policy == "largest":
        return max(ordered, key=lambda f: f.area)
    boxes = ", ".join(f"{i} at x={f.box[0]:.0f}..{f.box[2]:.0f}"
                      for i, f in enumerate(ordered, start=1))
    raise SwapError(f"{path}: {len(ordered)} faces found ({boxes}); choose one with "
                    "--target-face N (1 = leftmost) or set swap.several_faces=largest")


class _FrameSwapper:
    """Swap the chosen face of one full frame and paste the result back."""

    def __init__(self, cfg: Config, swapper: Swapper, code, report: SwapReport):
        self.cfg, self.swapper, self.code, self.report = cfg, swapper, code, report

    def __call__(self, rgb: np.ndarray, face: Face, window: CropWindow,
                 previous_alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        size = self.cfg.crop.size
        crop, matrix = warp_crop(rgb, window, size)
        landmarks = transform_points(face.landmarks, matrix)
        labels = self.swapper.parse(crop, landmarks, face.scheme)
        swap = self.swapper.swap_crop(self.code, crop, labels, landmarks, face.scheme)
        alpha = paste_alpha(swap, size, self.cfg.swap.feather)
        if previous_alpha is not None:  # temporal smoothing of the paste mask
            weight = self.cfg.swap.mask_smoothing
            alpha = (1 - weight) * alpha + weight * previous_alpha
        self.report.swapped += 1
        self.report.animated_fallback += int(not swap.animated_parsed)
        blended = to_uint8(resize(swap.blended, size))
        return paste_crop(rgb, blended, alpha, matrix), alpha


def _tags(sources: list[Path], target: Path) -> dict[str, str]:
    return {"sources": ", ".join(p.name for p in sources), "target": target.name,
            "model": f"heser {__version__} HeSer head swap"}


def swap_image(cfg: Config, swapper: Swapper, code, sources: list[Path], target: Path,
               out: Path, target_face: int | None, report: SwapReport) -> None:
    rgb, notes = read_image(target, cfg.crop.min_image_side)
    report.notes += [f"{target}: {note}" for note in notes]
    report.frames = 1
    faces = detect(swapper.backend, rgb, cfg.crop.max_image_side)
    if not faces:
        raise SwapError(f"{target}: no face found in the target")
    face = pick_target_face(faces, target, cfg.swap.several_faces, target_face)
    result, _ = _FrameSwapper(cfg, swapper, code, report)(rgb, face, _window(cfg, face))
    save_image(out, result, **_tags(sources, target))


def _track_faces(cfg: Config, swapper: Swapper, target: Path, total: int,
                 target_face: int | None) -> list[Face | None]:
    """Pass 1: the chosen face in every frame (None where there is none)."""
    chosen: list[Face | None] = []
    previous: Face | None = None
    for rgb in tqdm(read_frames(target), total=total, desc="detect", unit="frame",
                    dynamic_ncols=True):
        faces = detect(swapper.backend, rgb, cfg.crop.max_image_side)
        if not faces:
            chosen.append(None)
            continue
        if previous is None and not any(f is not None for f in chosen):
            previous = pick_target_face(faces, target, cfg.swap.several_faces, target_face)
        else:
            previous = choose_face(faces, previous)
        chosen.append(previous)
    return chosen


def _smoothed_windows(cfg: Config, faces: list[Face | None]) -> list[CropWindow | None]:
    """Crop windows, Gaussian-smoothed over each run of consecutive frames with a face."""
    windows: list[CropWindow | None] = [None] * len(faces)
    start = 0
    while start < len(faces):
        if faces[start] is None:
            start += 1
            continue
        end = start
        while end < len(faces) and faces[end] is not None:
            end += 1
        raw = [_window(cfg, face) for face in faces[start:end]]
        windows[start:end] = smooth_windows(raw, cfg.swap.smooth_sigma)
        start = end
    return windows


def swap_video(cfg: Config, swapper: Swapper, code, sources: list[Path], target: Path,
               out: Path, target_face: int | None, report: SwapReport) -> None:
    meta = probe_video(target)
    faces = _track_faces(cfg, swapper, target, meta.frame_count, target_face)
    windows = _smoothed_windows(cfg, faces)
    frame_swapper = _FrameSwapper(cfg, swapper, code, report)
    previous_alpha: np.ndarray | None = None
    with VideoWriter(out, meta.rate, meta.width, meta.height, crf=cfg.swap.crf,
                     audio_from=target if meta.has_audio else None,
                     metadata=_tags(sources, target)) as writer:
        frames = tqdm(read_frames(target), total=len(faces), desc="swap", unit="frame",
                      dynamic_ncols=True)
        for index, rgb in enumerate(frames):
            face = faces[index] if index < len(faces) else None
            window = windows[index] if index < len(windows) else None
            if face is None or window is None:
                report.no_face += 1
                previous_alpha = None
                writer.write(rgb)
            else:
                frame, previous_alpha = frame_swapper(rgb, face, window, previous_alpha)
                writer.write(frame)
            report.frames += 1


def check_output(target: Path, out: Path) -> None:
    suffix = out.suffix.lower()
    if is_video(target) and suffix not in VIDEO_OUTPUTS:
        raise SwapError(f"{out}: the target is a video, so the output must be one of "
                        f"{', '.join(VIDEO_OUTPUTS)}")
    if not is_video(target) and suffix not in IMAGE_OUTPUTS:
        raise SwapError(f"{out}: the target is a picture, so the output must be one of "
                        f"{', '.join(IMAGE_OUTPUTS)}")


def run_swap(cfg: Config, sources: list[Path], target: Path, out: Path,
             target_face: int | None = None, finetune_steps: int = 0,
             aligner: Path | None = None, blender: Path | None = None) -> SwapReport:
    """The whole `heser swap`: K source photos + a target picture or video -> ``out``."""
    if not sources:
        raise SwapError("give at least one source photo")
    check_output(target, out)
    for path in [*sources, target]:
        check_file(path)
    started = time.perf_counter()
    report = SwapReport(out)
    swapper = Swapper(cfg, aligner, blender)
    if finetune_steps:
        tuned = finetuned_aligner(cfg, sources, finetune_steps, aligner)
        swapper.load_aligner(load_checkpoint(tuned)["generator"])
        report.notes.append(f"aligner fine-tuned for {finetune_steps} steps ({tuned})")
    code = swapper.source_code(source_crops(cfg, swapper, sources, report.notes))
    run = swap_video if is_video(target) else swap_image
    run(cfg, swapper, code, sources, target, out, target_face, report)
    report.seconds = time.perf_counter() - started
    return report
