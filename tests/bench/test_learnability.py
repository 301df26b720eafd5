"""bench/learnability.py end to end on shards built from four real sample videos: the dry run
(every figure present, the grid, the MLflow run, the checkpoint kept for --resume), and a
few-minute training that must carry the sources' identity into I_A (``slow``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from heser.config import Config
from tests.conftest import ROOT, make_config, preprocess_sample, write_manifest

VIDEOS = [("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
          ("videos/mead_W009_front_happy_level3_001.mp4", "W009"),
          ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
          ("videos/vr1_young_asian_man_suit.mp4", "man_suit")]
IDENTITIES = ",".join(identity for _, identity in VIDEOS)
FIGURES = {"faceres_cross_top1", "faceres_chance", "faceres_cross_driver_share",
           "eid_cross_top1", "change_sources_only", "change_driver_only",
           "pose_error_to_driver_deg", "pose_error_to_sources_deg", "mouth_opening_correlation",
           "same_video_l1", "same_video_ssim", "same_video_lpips", "face_found",
           "same_video_l1_source_average", "portrait_code_spread", "adain_spread_over_drivers",
           "landmark_person_top1", "roll_given_deg", "roll_followed_deg", "roll_following",
           "mouth_given", "mouth_followed", "mouth_following",
           "pose_error_driver_to_sources_deg", "expression_error_driver_to_sources",
           "pose_error_floor_deg", "expression_error_floor"}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("learnability")
    manifest = write_manifest(tmp / "m.csv", VIDEOS)
    cfg = make_config(tmp, **{"assets.data_manifest": str(manifest),
                              "shard.split": {"val": 0.0, "test": 0.0},
                              "crop.video.max_frames": 16, "crop.video.stride": 4})
    preprocess_sample(cfg)
    return cfg


def _bench(cfg: Config, tmp_path: Path, *args: str) -> dict:
    """Run the bench on ``cfg``'s shards with its own MLflow store; its report."""
    paths = [f"paths.{name}={cfg.path(getattr(cfg.paths, name))}"
             for name in ("shards", "weights", "reports")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = tmp_path / "out"
    command = [sys.executable, "bench/learnability.py", "--identities", IDENTITIES,
               "--out", str(out), *[a for p in paths for a in ("--set", p)], *args]
    subprocess.run(command, cwd=ROOT, env=env, check=True, timeout=1800)
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        runs = mlflow.search_runs(experiment_names=["heser-learnability"])
    finally:
        mlflow.set_tracking_uri(None)
    assert len(runs) == 1 and runs["metrics.faceres_cross_top1"].notna().all()
    return json.loads((out / "learnability.json").read_text())


def test_dry_run_reports_every_figure(cfg: Config, tmp_path: Path):
    report = _bench(cfg, tmp_path, "--dry-run")
    assert set(report["figures"]) >= FIGURES
    assert report["figures"]["faceres_chance"] == 0.25
    # the roll test's drivers, turned 8 degrees each way, measure about 16 degrees apart
    assert 12 < report["figures"]["roll_given_deg"] < 20
    # the mouth test's drivers: the real detector finds the open mouth wider than the closed
    assert report["figures"]["mouth_given"] > 0.02
    assert all((tmp_path / "out" / f"{name}.png").exists() for name in ("grid", "roll", "mouth"))
    assert (tmp_path / "out" / "aligner.pt").exists()  # --resume can train it further


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_few_minutes_of_training_carry_the_sources_identity(cfg: Config, tmp_path: Path):
    """100 steps at 64 px (minutes on two CPU cores) must give each person their own face.
    Before the codes were standardised and the encoders freed of spectral norm, I_A hardly
    depended on the sources (a change of 0.02 after 200 steps on the bench's four people,
    docs/BENCHMARKS.md)."""
    # 16 frames a video: hold out 6, as the trainer's held-out episodes need K + 1 = 5
    figures = _bench(cfg, tmp_path, "--holdout", "0.35", "--set",
                     "aligner.train.steps=100")["figures"]
    assert figures["change_sources_only"] > 0.1
    assert figures["faceres_cross_top1"] >= 2 * figures["faceres_chance"]  # FaceRes: not a loss
    assert figures["faceres_cross_driver_share"] < figures["faceres_cross_top1"]
