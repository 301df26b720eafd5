"""`heser swap` on real photos and real clips, with tiny untrained networks (what is tested is
the plumbing: faces, crops, video sources, paste-back, frames, fps, audio, tags and the errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heser.config import Config, with_overrides
from heser.data.media import MediaError, read_image
from heser.data.video_io import VideoWriter, probe_video, read_frames, read_metadata
from heser.face.align import transform_points
from heser.imaging import from_uint8
from heser.nets.aligner import Head2HeadAligner
from heser.nets.blender import Head2SceneBlender
from heser.nets.discriminator import Discriminator
from heser.swap import SwapError, Swapper, paste_alpha
from heser.swap_media import (
    head_poses,
    pick_target_face,
    run_swap,
    spread_over_pose,
    video_source_crops,
)
from heser.train.checkpoint import save_checkpoint
from tests.conftest import ROOT, make_config, sample_path
from tests.train.test_blender_task import TINY as TINY_BLENDER
from tests.train.test_gan import TINY as TINY_ALIGNER

SOURCE = "images/st_woman_B_happy1.png"
TARGET = "images/lp_d8jpg_man_curly_hair.jpg"
CLIP = "videos/tpsmm_driving_asian_man.mp4"  # 410x412, 25 fps, with AAC audio


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path) -> Config:
    """Tiny untrained models saved where the training stages would put them."""
    tmp = tmp_path_factory.mktemp("swap")
    cfg = make_config(tmp, **{
        **TINY_ALIGNER, **TINY_BLENDER, "paths.weights": str(weights_dir), "crop.size": 128,
        "swap.device": "cpu", "swap.finetune_cache": str(tmp / "finetune"),
        "aligner.train.batch_size": 2})
    save_untrained_models(cfg)
    return cfg


def save_untrained_models(cfg: Config) -> None:
    """Freshly initialised aligner and blender checkpoints where the training stages put them."""
    torch.manual_seed(0)
    models = cfg.path(cfg.paths.models)
    d = cfg.aligner.discriminator
    save_checkpoint(models / "aligner.pt", {
        "step": 0, "generator": Head2HeadAligner(cfg.aligner, 128).state_dict(),
        "discriminator": Discriminator(cfg.aligner.size, d.base_channels,
                                       d.max_channels).state_dict()})
    save_checkpoint(models / "blender.pt",
                    {"generator": Head2SceneBlender(cfg.blender).state_dict()})


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 real frames with a face, then 3 grey frames without one, with the clip's audio."""
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    meta = probe_video(sample_path(CLIP))
    with VideoWriter(out, meta.rate, meta.width, meta.height,
                     audio_from=sample_path(CLIP)) as writer:
        for index, rgb in enumerate(read_frames(sample_path(CLIP))):
            writer.write(rgb if index < 10 else np.full_like(rgb, 128))
            if index == 12:
                break
    return out


def test_a_picture_is_swapped_pasted_back_at_full_size_and_tagged(cfg: Config, tmp_path: Path):
    out = tmp_path / "swap.png"
    report = run_swap(cfg, [sample_path(SOURCE)], sample_path(TARGET), out)
    assert (report.frames, report.swapped, report.no_face) == (1, 1, 0)
    target = read_image(sample_path(TARGET), 8)[0]
    result = np.asarray(Image.open(out).convert("RGB"))
    assert result.shape == target.shape
    changed = np.abs(result.astype(int) - target).max(axis=2) > 0
    h, w = changed.shape
    assert changed[h // 4:h // 2, w // 3:2 * w // 3].mean() > 0.5  # the head was replaced
    assert not changed[:, :w // 10].any() and not changed[-h // 10:].any()  # far away: untouched
    tags = read_metadata(out)
    assert tags["heser:synthetic"] == "true" and tags["DigitalSourceType"].endswith(
        "algorithmicMedia")
    assert tags["heser:sources"] == Path(SOURCE).name


def test_landmark_motion_input_animates_from_the_targets_landmarks(cfg: Config,
                                                                   tmp_path: Path):
    landmarks = with_overrides(cfg, {"aligner.motion_input": "landmarks",
                                     "paths.models": str(tmp_path / "models"),
                                     "swap.finetune_cache": str(tmp_path / "finetune")}, "test")
    save_untrained_models(landmarks)
    report = run_swap(landmarks, [sample_path(SOURCE)], sample_path(TARGET), tmp_path / "s.png")
    assert (report.frames, report.swapped) == (1, 1)
    swapper = Swapper(landmarks)
    crop = swapper.cropper.crop_photo(read_image(sample_path(TARGET), 8)[0], TARGET)
    marks = transform_points(crop.face.landmarks, crop.matrix)  # crop pixels
    code = swapper.source_code([crop.image])
    target = from_uint8(crop.image)[None]
    with torch.no_grad():
        still = swapper.animate(code, target, marks)
        opened = marks.copy()
        opened[14, 1] += 0.1 * crop.image.shape[0]  # mediapipe468: the lower inner lip drops
        moved = swapper.animate(code, target, opened)
    assert (still - moved).abs().max() > 0
    with pytest.raises(ValueError, match="without landmark features"):
        swapper.animate(code, target)
    # fine-tuning reads the sources' landmarks too
    sources = [sample_path(SOURCE), sample_path("images/dt_woman_D_crop256.png")]
    tuned = run_swap(landmarks, sources, sample_path(TARGET), tmp_path / "t.png",
                     finetune_steps=1)
    assert "fine-tuned for 1 steps" in tuned.notes[-1]


def test_a_video_keeps_its_frames_size_fps_and_audio_and_counts_faceless_frames(
        cfg: Config, clip: Path, tmp_path: Path):
    out = tmp_path / "swap.mp4"
    report = run_swap(cfg, [sample_path(SOURCE), sample_path(TARGET)], clip, out)
    assert (report.frames, report.swapped, report.no_face) == (13, 10, 3)
    meta = probe_video(out)
    assert (meta.width, meta.height, meta.frame_count) == (410, 412, 13)
    assert meta.rate == Fraction(25) and meta.has_audio
    assert read_metadata(out)["synthetic"] == "true"
    frames = list(read_frames(out))
    original = list(read_frames(clip))
    assert len(frames) == 13
    # faceless frames pass through (up to re-encoding); swapped ones differ in the face
    assert np.abs(frames[-1].astype(int) - original[-1]).mean() < 2
    assert np.abs(frames[0].astype(int) - original[0])[100:250, 120:290].mean() > 5
    # the stability of the result is measured next to the target's own, faceless frames left out
    stability = report.summary()
    assert "video stability over 10 frames (3 without a face left out)" in stability
    for number in ("flicker", "identity_spread", "faceres_cosine", "landmark_jitter"):
        assert f"  {number}: " in stability and "(target's own: " in stability


def test_sources_without_a_face_and_unreadable_targets_are_named(cfg: Config, tmp_path: Path):
    wall = tmp_path / "wall.png"
    Image.new("RGB", (320, 320), (120, 110, 100)).save(wall)
    with pytest.raises(SwapError, match="wall.png: no face found$"):
        run_swap(cfg, [wall], sample_path(TARGET), tmp_path / "out.png")
    with pytest.raises(SwapError, match="wall.png: no face found in the target"):
        run_swap(cfg, [sample_path(SOURCE)], wall, tmp_path / "out.png")
    with pytest.raises(MediaError, match="missing.jpg: file not found"):
        run_swap(cfg, [tmp_path / "missing.jpg"], sample_path(TARGET), tmp_path / "out.png")
    broken = tmp_path / "broken.jpg"
    broken.write_text("not an image")
    with pytest.raises(MediaError, match="broken.jpg: not a readable image"):
        run_swap(cfg, [sample_path(SOURCE)], broken, tmp_path / "out.png")
    with pytest.raises(SwapError, match="target is a picture, so the output must be"):
        run_swap(cfg, [sample_path(SOURCE)], sample_path(TARGET), tmp_path / "out.mp4")
    assert not list(tmp_path.glob("out*"))


def test_several_target_faces_need_a_choice(cfg: Config, tmp_path: Path):
    left = read_image(sample_path("images/dt_woman_D_crop256.png"), 8)[0]
    right = read_image(sample_path("images/dt_man_E_crop256.png"), 8)[0]
    pair = tmp_path / "two.png"
    Image.fromarray(np.hstack([left, right])).save(pair)
    with pytest.raises(SwapError, match=r"2 faces found .* --target-face N"):
        run_swap(cfg, [sample_path(SOURCE)], pair, tmp_path / "out.png")
    with pytest.raises(SwapError, match="--target-face 3, but the target has 2 face"):
        run_swap(cfg, [sample_path(SOURCE)], pair, tmp_path / "out.png", target_face=3)
    faces = Swapper(cfg).backend(np.hstack([left, right]))
    largest = max(faces, key=lambda f: f.area)
    assert pick_target_face(faces, pair, "largest", None) is largest
    assert pick_target_face(faces, pair, "error", 1).box[0] < 256  # 1 = leftmost
    run_swap(cfg, [sample_path(SOURCE)], pair, tmp_path / "out.png", target_face=2)
    result = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    assert np.array_equal(result[:, :200], left[:, :200])  # the left face is untouched
    assert np.abs(result[:, 256:] - right).mean() > 1


def test_missing_models_say_which_stage_to_run(cfg: Config, tmp_path: Path):
    with pytest.raises(SwapError, match=r"no trained model; run `dvc repro train_blender`"):
        Swapper(cfg, blender_checkpoint=tmp_path / "none.pt")
    run = subprocess.run(
        [sys.executable, "-m", "heser.cli", "swap", "--source", str(sample_path(SOURCE)),
         "--target", str(sample_path(TARGET)), "--out", str(tmp_path / "o.png"),
         "--set", f"paths.models={tmp_path / 'empty'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "heser swap: error:" in run.stderr and "dvc repro train_aligner" in run.stderr


def test_finetuning_runs_once_per_source_set_and_is_cached(cfg: Config, tmp_path: Path):
    sources = [sample_path(SOURCE), sample_path("images/dt_woman_D_crop256.png")]
    report = run_swap(cfg, sources, sample_path(TARGET), tmp_path / "a.png", finetune_steps=1)
    cached = list(cfg.path(cfg.swap.finetune_cache).glob("*.pt"))
    assert len(cached) == 1 and "fine-tuned for 1 steps" in report.notes[-1]
    stamp = cached[0].stat().st_mtime_ns
    run_swap(cfg, sources, sample_path(TARGET), tmp_path / "b.png", finetune_steps=1)
    assert cached[0].stat().st_mtime_ns == stamp
    assert len(list(cfg.path(cfg.swap.finetune_cache).glob("*.pt"))) == 1


def test_paste_weight_covers_the_changed_region_and_fades_at_the_crop_border(cfg: Config):
    swapper = Swapper(cfg)
    crop = read_image(sample_path("images/dt_woman_D_crop256.png"), 8)[0][::2, ::2]
    faces = swapper.backend(np.ascontiguousarray(crop))
    labels = swapper.parse(np.ascontiguousarray(crop), faces[0].landmarks, faces[0].scheme)
    code = swapper.source_code([np.ascontiguousarray(crop)])
    swap = swapper.swap_crop(code, np.ascontiguousarray(crop), labels, faces[0].landmarks,
                             faces[0].scheme)
    alpha = paste_alpha(swap, 128, cfg.swap.feather)
    assert alpha.shape == (128, 128) and alpha.min() >= 0 and alpha.max() <= 1
    assert alpha[64, 64] > 0.99  # the face centre is the blender's
    assert alpha[0].max() == 0 and alpha[:, -1].max() == 0  # no seam at the crop border


def test_a_video_source_gives_frames_spread_over_head_pose(cfg: Config, tmp_path: Path):
    video_cfg = cfg.model_copy(update={"swap": cfg.swap.model_copy(
        update={"source_frames": 4, "source_candidates": 24})})
    swapper = Swapper(video_cfg)
    notes: list[str] = []
    chosen = video_source_crops(video_cfg, swapper.cropper, sample_path(CLIP), notes)
    assert len(chosen) == 4 and all(c.image.shape == (128, 128, 3) for c in chosen)
    # 169 frames, at most 24 examined: every 8th, 22 frames
    assert notes == [f"{sample_path(CLIP)}: 4 frames taken (of 22 with a face in 22 examined)"]
    # the candidates' poses, read again: the chosen frames span most of their yaw range
    every = video_source_crops(video_cfg.model_copy(update={"swap": video_cfg.swap.model_copy(
        update={"source_frames": 22})}), swapper.cropper, sample_path(CLIP), [])
    yaw_all = head_poses([c.face for c in every])[:, 0]
    yaw_chosen = head_poses([every[0].face] + [c.face for c in chosen])[1:, 0]
    assert np.ptp(yaw_chosen) > 0.8 * np.ptp(yaw_all) > 5
    report = run_swap(video_cfg, [sample_path(CLIP), sample_path(SOURCE)], sample_path(TARGET),
                      tmp_path / "out.png")
    assert report.swapped == 1 and "4 frames taken" in report.notes[0]


def test_farthest_point_sampling_covers_the_poses_deterministically():
    poses = np.array([[0, 0], [1, 0], [30, 0], [-30, 0], [0, 20], [2, 1], [0, -20.0]])
    assert spread_over_pose(poses, 5) == [0, 2, 3, 4, 6]
    assert spread_over_pose(poses, 9) == list(range(7))
    assert spread_over_pose(np.zeros((5, 2)), 3) == [0, 1, 2]  # the same pose: no repeats


def test_a_source_video_without_a_usable_face_is_named(cfg: Config, tmp_path: Path):
    grey = tmp_path / "grey.mp4"
    with VideoWriter(grey, 25, 320, 240) as writer:
        for _ in range(5):
            writer.write(np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(SwapError, match=r"grey.mp4: no usable face in 5 frames of this video"):
        run_swap(cfg, [grey], sample_path(TARGET), tmp_path / "out.png")


def test_faces_under_min_face_px_are_refused_in_sources_and_targets(cfg: Config,
                                                                     tmp_path: Path):
    strict = cfg.model_copy(update={"crop": cfg.crop.model_copy(update={"min_face_px": 2000})})
    with pytest.raises(SwapError, match=r"st_woman_B_happy1.png: face too small \(\d+ px < "
                                        r"crop.min_face_px 2000\)"):
        run_swap(strict, [sample_path(SOURCE)], sample_path(TARGET), tmp_path / "out.png")
    # the source's face is 260 px, the target's 116 px
    between = cfg.model_copy(update={"crop": cfg.crop.model_copy(update={"min_face_px": 200})})
    with pytest.raises(SwapError, match=r"st_woman_B_happy1.png: the target's face too small"):
        run_swap(between, [sample_path(TARGET)], sample_path(SOURCE), tmp_path / "out.png")


@pytest.mark.parametrize("module", ["heser.swap", "heser.swap_media", "heser.evaluate"])
def test_inference_imports_no_training_code(module: str):
    code = (f"import json, sys, {module}; print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith('heser.train'))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True)
    # inference may read checkpoints (the loader) and ask where they live (heser.train.models,
    # a table of names and paths); nothing that trains
    assert set(json.loads(run.stdout)) <= {"heser.train", "heser.train.checkpoint",
                                           "heser.train.models"}
