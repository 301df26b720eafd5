"""Both training stages end to end on small real shards, tiny networks: held-out metrics
before and after, the reports, the checkpoint, and a resume that continues it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from heser.config import Config
from heser.train.aligner import AlignerTask
from heser.train.blender import BlenderTask
from heser.train.stage import train_stage
from tests.conftest import ROOT, make_config, preprocess_sample, write_manifest
from tests.train.test_blender_task import TINY as TINY_BLENDER
from tests.train.test_gan import TINY as TINY_ALIGNER

VIDEOS = [("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
          ("videos/mead_W009_front_happy_level3_001.mp4", "W009"),
          ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
          ("videos/vr1_young_asian_man_suit.mp4", "man_suit")]
STEPS = {"aligner.train.steps": 2, "aligner.train.eval_episodes": 2,
         "blender.train.steps": 2, "blender.train.eval_episodes": 2,
         "blender.train.workers": 0, "blender.train.log_every": 1}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("stage")
    manifest = write_manifest(tmp / "m.csv", VIDEOS)
    cfg = make_config(tmp, **{**TINY_ALIGNER, **TINY_BLENDER, **STEPS,
                              "assets.data_manifest": str(manifest),
                              "crop.video.max_frames": 4, "crop.video.stride": 6})
    preprocess_sample(cfg)
    return cfg


def _run(cfg: Config, name: str, task, train, k: int) -> dict:
    return train_stage(cfg, name, task, train, k, cfg.path(cfg.paths.models) / f"{name}.pt",
                       cfg.path(cfg.paths.reports), {"test": True})


def test_aligner_stage_writes_metrics_plots_grid_and_resumes(cfg: Config):
    metrics = _run(cfg, "aligner", AlignerTask, cfg.aligner.train, cfg.aligner.k)
    reports = cfg.path(cfg.paths.reports)
    saved = json.loads((reports / "aligner.json").read_text())
    assert saved["steps"] == 2 and set(saved["step0"]) >= {"l1", "ssim", "identity_cosine"}
    assert saved == json.loads(json.dumps(metrics))
    assert Image.open(reports / "aligner_samples.png").text["heser:synthetic"] == "true"
    longer = cfg.aligner.train.model_copy(update={"steps": 3})
    _run(cfg, "aligner", AlignerTask, longer, cfg.aligner.k)  # resumes at step 2
    with open(reports / "aligner_losses.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == [1, 2, 3]
    state = torch.load(cfg.path(cfg.paths.models) / "aligner.pt", weights_only=True)
    assert state["step"] == 3


def test_blender_stage_compares_with_poisson_and_paste(cfg: Config):
    metrics = _run(cfg, "blender", BlenderTask, cfg.blender.train, 1)
    for method in ("blender", "poisson", "paste"):
        for key in ("head_psnr", "head_ssim", "inpaint_psnr", "inpaint_ssim"):
            assert f"{method}/{key}" in metrics["final"]
    assert 5 < metrics["final"]["paste/head_psnr"] < 60  # real numbers, not placeholders
    grid = Image.open(cfg.path(cfg.paths.reports) / "blender_samples.png")
    assert grid.width == 6 * cfg.blender.size


def test_stage_without_usable_videos_says_why_without_a_traceback(cfg: Config):
    run = subprocess.run(
        [sys.executable, "-m", "stages.train_aligner", "--set", "aligner.k=40",
         "--set", f"paths.shards={cfg.path(cfg.paths.shards)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "train_aligner: error: no video of split 'train'" in run.stderr
    assert "k=40" in run.stderr and "Traceback" not in run.stderr
