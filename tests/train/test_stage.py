"""Both training stages end to end on small real shards, tiny networks: held-out metrics
before and after, the reports (DVC's reproducible, the timings apart), the checkpoint, a resume
that continues it, and the blender stage under torchrun with two processes (gloo, CPU)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from PIL import Image

from heser.config import Config, with_overrides
from heser.tracking import EXPERIMENT_KIND
from heser.train.aligner import AlignerTask
from heser.train.blender import BlenderTask
from heser.train.gan import GanTask
from heser.train.stage import StageOptions, train_stage
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


def _run(cfg: Config, task: type[GanTask]) -> dict:
    return train_stage(cfg, task, StageOptions(track=False))


def test_aligner_stage_writes_metrics_plots_grid_and_resumes(cfg: Config):
    metrics = _run(cfg, AlignerTask)
    reports = cfg.path(cfg.paths.reports)
    saved = json.loads((reports / "aligner.json").read_text())
    assert saved["steps"] == 2 and set(saved["step0"]) >= {"l1", "ssim", "lpips",
                                                           "identity_cosine"}
    assert saved == json.loads(json.dumps(metrics))
    assert Image.open(reports / "aligner_samples.png").text["heser:synthetic"] == "true"
    _run(with_overrides(cfg, {"aligner.train.steps": 3}, "test"), AlignerTask)  # from step 2
    with open(reports / "aligner_losses.csv") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == [1, 2, 3]
    state = torch.load(cfg.path(cfg.paths.models) / "aligner.pt", weights_only=True)
    assert state["step"] == 3


def test_a_rerun_rewrites_the_dvc_reports_byte_for_byte_and_times_apart(cfg: Config,
                                                                         tmp_path: Path):
    """What DVC tracks holds no wall-clock figure, so a rerun that trains the same model leaves
    dvc.lock as it was; the timings go to reports/timings/, which DVC does not track."""
    tracked = ("aligner.json", "aligner_losses.csv", "aligner_samples.png")
    runs = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        train_stage(cfg, AlignerTask, StageOptions(checkpoint=out / "aligner.pt",
                                                   reports=out, track=False))
        runs.append({name: (out / name).read_bytes() for name in (*tracked, "aligner.pt")})
        timings = json.loads((out / "timings" / "train_aligner.json").read_text())
        assert timings["train_seconds"] > 0 and timings["steps_run"] == 2
    for name in tracked:
        assert runs[0][name] == runs[1][name], name
    assert not {"train_seconds", "episodes_per_s"} & set(json.loads(runs[0]["aligner.json"]))
    first, second = (torch.load(tmp_path / a / "aligner.pt", weights_only=True)
                     for a in ("first", "second"))
    for key, value in first["generator"].items():
        assert torch.equal(value, second["generator"][key]), key


def test_blender_stage_compares_with_the_same_inputs_recoloured_and_poisson(cfg: Config):
    metrics = _run(cfg, BlenderTask)
    for method in ("blender", "recolour", "poisson"):
        for key in ("head_psnr", "head_psnr_identical", "head_ssim", "head_lpips",
                    "inpaint_psnr", "inpaint_ssim", "inpaint_lpips"):
            assert f"{method}/{key}" in metrics["final"]
    assert 5 < metrics["final"]["recolour/head_psnr"] < 60  # real numbers, not placeholders
    assert 0 < metrics["final"]["blender/head_lpips"] < 2
    saved = json.loads((cfg.path(cfg.paths.reports) / "blender.json").read_text())
    assert set(saved["given"]) == {"blender", "recolour", "poisson"}
    grid = Image.open(cfg.path(cfg.paths.reports) / "blender_samples.png")
    assert grid.width == 6 * cfg.blender.size


def test_blender_stage_under_torchrun_with_two_processes(cfg: Config, tmp_path: Path):
    """Data parallel through DDP wrappers the trainer builds, with held-out evaluation and the
    preview on the main process alone (no collective call there, so no hang); the checkpoint
    records both processes' data positions. MLflow: the run is named by its stage and tagged
    experiment opens on the training-runs table."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = {**TINY_ALIGNER, **TINY_BLENDER, **STEPS,
                 "paths.shards": str(cfg.path(cfg.paths.shards)),
                 "paths.weights": str(cfg.path(cfg.paths.weights)),
                 "paths.models": str(tmp_path / "models"), "paths.reports": str(tmp_path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "stages.train_blender",
               *[arg for key, value in overrides.items()
                 for arg in ("--set", f"{key}={json.dumps(value)}")]]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "blender.pt", weights_only=True)
    assert state["step"] == 2 and len(state["data"]) == 2
    assert not any(key.startswith("module.") for key in state["generator"])  # the bare G_B
    metrics = json.loads((tmp_path / "blender.json").read_text())
    assert set(metrics["final"]) >= {"blender/head_psnr", "poisson/head_psnr"}
    assert json.loads((tmp_path / "timings" / "train_blender.json").read_text())[
        "world_size"] == 2
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("heser-blender")
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.run_name.startswith("train_blender ") and logged.info.status == "FINISHED"
    assert logged.data.params["world_size"] == "2"
    assert "timing/train_seconds" in logged.data.metrics


def test_stage_without_usable_videos_says_why_without_a_traceback(cfg: Config):
    run = subprocess.run(
        [sys.executable, "-m", "stages.train_aligner", "--set", "aligner.k=40",
         "--set", f"paths.shards={cfg.path(cfg.paths.shards)}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "train_aligner: error: no video of split 'train'" in run.stderr
    assert "k=40" in run.stderr and "Traceback" not in run.stderr


def test_aligner_stage_trains_the_landmark_motion_input_with_cross_pairs(cfg: Config,
                                                                        tmp_path: Path):
    landmarks = with_overrides(cfg, {"aligner.motion_input": "landmarks",
                                     "aligner.loss.cross_identity": 1.0}, "test")
    metrics = train_stage(landmarks, AlignerTask,
                          StageOptions(checkpoint=tmp_path / "aligner.pt", reports=tmp_path,
                                       track=False))
    assert metrics["steps"] == 2 and metrics["step0"]["l1"] > 0
    names = torch.load(tmp_path / "aligner.pt", weights_only=True)["generator"]
    assert any(n.startswith("landmark_motion.") for n in names)
    assert not any(n.startswith(("pose.", "expression.")) for n in names)
