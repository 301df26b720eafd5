"""`heser swap` on whole pictures and videos: find the faces, cut the crops with the one cropper
(:mod:`heser.face.cropper`, as the crop stage cuts them), swap each target crop
(:class:`heser.swap.Swapper`), paste I_B back into the full-resolution frame through the inverse
of the crop transform, feathered.

Sources are photos or videos. A photo gives its largest face. A video gives
``swap.source_frames`` frames spread over head pose: at most ``swap.source_candidates`` frames,
evenly spaced, are searched for the face (tracked as in the crop stage), each face's yaw and
pitch are read off its 3-D landmarks (:func:`heser.metrics.head_rotation`), and farthest-point
sampling on (yaw, pitch) picks the frames that cover the range of poses.

Several faces in a target: ``swap.several_faces: error`` (the default) stops and lists them,
numbered left to right, so the user picks one with ``--target-face N``; ``largest`` takes the
largest. In a video the choice is made on the first frame with a face and then tracked (the
face overlapping the previous frame's). Frames without a face, or with one smaller than
``crop.min_face_px``, pass through unchanged and are counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from heser import __version__, metrics
from heser.config import Config
from heser.data.media import check_file, is_video, read_image
from heser.data.video_io import VideoReader, VideoWriter, probe_video, read_frames, save_image
from heser.face.align import CropWindow, paste_crop, transform_points
from heser.face.cropper import CropError, CroppedFace, Cropper, choose_face
from heser.face.types import Face
from heser.imaging import resize, to_uint8
from heser.swap import SwapError, Swapper, finetuned_aligner, paste_alpha
from heser.train.checkpoint import load_checkpoint
from heser.video_stability import stability_summary, video_stability

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg")
VIDEO_OUTPUTS = (".mp4",)


@dataclass
class SwapReport:
    output: Path
    frames: int = 0
    swapped: int = 0
    no_face: int = 0  # frames passed through unchanged: no face, or under crop.min_face_px
    animated_fallback: int = 0  # frames whose I_A was parsed with the target's landmarks
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        text = (f"{self.output}: {self.swapped} of {self.frames} frames swapped, {self.no_face} "
                f"without a usable face passed through ({self.seconds:.1f} s, "
                f"{fps:.2f} frames/s)")
        if self.animated_fallback:
            text += (f"; {self.animated_fallback} animated heads parsed with the target's "
                     "landmarks (no face found in I_A)")
        return "\n".join([text, *self.notes])


def source_crops(cfg: Config, cropper: Cropper, paths: list[Path],
                 notes: list[str]) -> list[CroppedFace]:
    """The head crops of the sources (with the faces they were cut around): one per photo,
    ``swap.source_frames`` per video."""
    crops: list[CroppedFace] = []
    for path in paths:
        try:
            if is_video(path):
                crops += video_source_crops(cfg, cropper, path, notes)
            else:
                rgb, _ = read_image(path, cfg.crop.min_image_side)
                crops.append(cropper.crop_photo(rgb, path, notes))
        except CropError as exc:
            raise SwapError(str(exc)) from exc
    return crops


def video_source_crops(cfg: Config, cropper: Cropper, path: Path,
                       notes: list[str]) -> list[CroppedFace]:
    """``swap.source_frames`` crops of a source video that cover its range of head poses."""
    reader = VideoReader(path, cfg.crop.min_image_side)
    stride = max(1, math.ceil(reader.info.frame_count / cfg.swap.source_candidates))
    found: list[CroppedFace] = []
    previous: Face | None = None
    examined = 0
    for _, rgb in reader.frames(stride, cfg.swap.source_candidates):
        examined += 1
        faces = cropper.detect(rgb)
        face = choose_face(faces, previous) if faces else None
        if face is not None and cropper.too_small(face) is None:
            found.append(cropper.warp(rgb, face))
            previous = face
    if not found:
        raise CropError(f"{path}: no usable face in {examined} frames of this video (none found, "
                        f"or all smaller than crop.min_face_px {cfg.crop.min_face_px})")
    poses = head_poses([c.face for c in found])
    if poses is None:
        notes.append(f"{path}: no 3-D landmarks for head pose; frames spread over time")
        picks = np.linspace(0, len(found) - 1, min(cfg.swap.source_frames, len(found)))
        chosen = sorted({int(round(i)) for i in picks})
    else:
        chosen = spread_over_pose(poses, cfg.swap.source_frames)
    notes.append(f"{path}: {len(chosen)} frames taken (of {len(found)} with a face in "
                 f"{examined} examined)")
    return [found[i] for i in chosen]


def head_poses(faces: list[Face]) -> np.ndarray | None:
    """[N, 2] (yaw, pitch) in degrees of each face relative to the first, from the rigid 3-D
    landmarks; None when the backend's landmarks are 2-D (FAN)."""
    reference = faces[0].landmarks
    if reference.ndim != 2 or reference.shape[1] != 3:
        return None
    angles = [metrics.euler_angles_deg(metrics.head_rotation(reference, f.landmarks, f.scheme))
              for f in faces]
    return np.array([(yaw, pitch) for yaw, pitch, _ in angles])


def spread_over_pose(poses: np.ndarray, count: int) -> list[int]:
    """Indices of ``count`` rows of ``poses`` ([N, 2] yaw, pitch) covering their range, in
    order: the pose nearest the mean first, then each time the one farthest from every pose
    taken (farthest-point sampling; deterministic, ties go to the earlier frame)."""
    if len(poses) <= count:
        return list(range(len(poses)))
    first = int(np.argmin(np.linalg.norm(poses - poses.mean(0), axis=1)))
    chosen = [first]
    distance = np.linalg.norm(poses - poses[first], axis=1)
    while len(chosen) < count:
        distance[chosen] = -1.0  # never twice, even where every pose is the same
        pick = int(np.argmax(distance))
        chosen.append(pick)
        distance = np.minimum(distance, np.linalg.norm(poses - poses[pick], axis=1))
    return sorted(chosen)


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
        cropped = self.swapper.cropper.warp(rgb, face, window)
        crop, matrix = cropped.image, cropped.matrix
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
    faces = swapper.cropper.detect(rgb)
    if not faces:
        raise SwapError(f"{target}: no face found in the target")
    face = pick_target_face(faces, target, cfg.swap.several_faces, target_face)
    too_small = swapper.cropper.too_small(face)
    if too_small:
        raise SwapError(f"{target}: the target's {too_small}")
    window = swapper.cropper.window(face)
    result, _ = _FrameSwapper(cfg, swapper, code, report)(rgb, face, window)
    save_image(out, result, **_tags(sources, target))


def _track_faces(swapper: Swapper, target: Path, total: int, target_face: int | None,
                 policy: str) -> list[Face | None]:
    """Pass 1: the chosen face in every frame (None where there is none, or it is smaller than
    crop.min_face_px)."""
    chosen: list[Face | None] = []
    previous: Face | None = None
    for rgb in tqdm(read_frames(target), total=total, desc="detect", unit="frame",
                    dynamic_ncols=True):
        faces = swapper.cropper.detect(rgb)
        if not faces:
            chosen.append(None)
            continue
        if previous is None:
            face = pick_target_face(faces, target, policy, target_face)
        else:
            face = choose_face(faces, previous)
        usable = swapper.cropper.too_small(face) is None
        previous = face if usable else previous
        chosen.append(face if usable else None)
    return chosen


def swap_video(cfg: Config, swapper: Swapper, code, sources: list[Path], target: Path,
               out: Path, target_face: int | None, report: SwapReport) -> None:
    meta = probe_video(target)
    faces = _track_faces(swapper, target, meta.frame_count, target_face, cfg.swap.several_faces)
    windows = swapper.cropper.windows(faces, cfg.swap.smooth_sigma)
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
    """The whole `heser swap`: K source photos or videos + a target picture or video -> ``out``.
    With ``finetune_steps`` the aligner is first fine-tuned on the same source crops."""
    if not sources:
        raise SwapError("give at least one source photo or video")
    check_output(target, out)
    for path in [*sources, target]:
        check_file(path)
    started = time.perf_counter()
    report = SwapReport(out)
    swapper = Swapper(cfg, aligner, blender)
    crops = source_crops(cfg, swapper.cropper, sources, report.notes)
    if finetune_steps:
        tuned = finetuned_aligner(cfg, crops, [p.name for p in sources], finetune_steps, aligner)
        swapper.load_aligner(load_checkpoint(tuned)["generator"])
        report.notes.append(f"aligner fine-tuned for {finetune_steps} steps ({tuned})")
    images = [crop.image for crop in crops]
    code = swapper.source_code(images)
    if is_video(target):
        swap_video(cfg, swapper, code, sources, target, out, target_face, report)
    else:
        swap_image(cfg, swapper, code, sources, target, out, target_face, report)
    report.seconds = time.perf_counter() - started
    if is_video(target) and cfg.swap.video_stability:
        report.notes.append(stability_summary(video_stability(cfg, target, out, images)))
    return report
