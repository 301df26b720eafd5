"""The `evaluate` stage on small real shards with tiny untrained models: every number is a real
measurement (or an explicit null / "unavailable"), the report shows the pictures, MLflow has
the run. The metric functions themselves are tested against known values in test_metrics.py."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest

from heser.config import Config
from heser.evaluate import plan_pairs, run_evaluate
from tests.conftest import make_config, preprocess_sample, write_manifest
from tests.test_swap import save_untrained_models
from tests.train.test_blender_task import TINY as TINY_BLENDER
from tests.train.test_gan import TINY as TINY_ALIGNER

VIDEOS = [("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
          ("videos/mead_W009_front_happy_level3_001.mp4", "W009"),
          ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("evaluate")
    manifest = write_manifest(tmp / "m.csv", VIDEOS)
    # every identity in one split, so the test has same-video and cross-identity pairs
    cfg = make_config(tmp, **{
        **TINY_ALIGNER, **TINY_BLENDER, "assets.data_manifest": str(manifest),
        "crop.size": 128, "crop.video.max_frames": 4, "crop.video.stride": 6,
        "shard.split.val": 0.0, "shard.split.test": 0.0, "evaluate.split": "train",
        "evaluate.episodes_per_video": 1, "evaluate.cross_pairs": 3, "evaluate.report_rows": 2,
        "swap.device": "cpu"})
    preprocess_sample(cfg)
    save_untrained_models(cfg)
    return cfg


def test_pairs_never_mix_identities_in_sources_and_cross_targets_differ(cfg: Config):
    pairs = plan_pairs(cfg, cfg.path(cfg.paths.shards))
    same = [p for p in pairs if p.same_video]
    cross = [p for p in pairs if not p.same_video]
    assert len(same) == 3 and len(cross) == 3
    for pair in pairs:
        identities = {key.split("__")[0] for key in pair.source_keys}
        assert len(identities) == 1 and len(pair.source_keys) == cfg.aligner.k
        target = pair.target_key.split("__")[0]
        assert (target in identities) == pair.same_video
        assert pair.target_key not in pair.source_keys
    assert plan_pairs(cfg, cfg.path(cfg.paths.shards)) == pairs  # seeded


def test_evaluate_writes_metrics_pairs_report_and_an_mlflow_run(cfg: Config, tmp_path: Path,
                                                                monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = run_evaluate(cfg)
    reports = cfg.path(cfg.paths.reports)
    saved = json.loads((reports / "metrics.json").read_text())
    assert saved["pairs"] == {"same_video": 3, "cross_identity": 3}
    # DVC tracks metrics.json: no wall-clock time in it, that goes to an untracked file
    assert "seconds" not in saved
    timings = json.loads((reports / "timings" / "evaluate.json").read_text())
    assert timings["seconds"] > 0 and timings["seconds_per_pair"] > 0
    same = saved["reenactment"]["same_video"]
    assert 0 < same["ssim"] < 1 and 0 < same["psnr"] < 60 and 0 <= same["identity_error"] <= 2
    for group in (same, saved["reenactment"]["cross_identity"], saved["swap"]["heser"],
                  saved["swap"]["poisson_k1"]):
        assert "pose_error_deg" in group and "expression_error" in group
    for method in ("heser", "poisson_k1"):
        swap = saved["swap"][method]
        assert -1 <= swap["identity_similarity"] <= 1
        assert 5 < swap["background_psnr"] < 150
    assert saved["lpips"].startswith("unavailable")
    with open(reports / "evaluate_pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"same_video", "cross_identity"}
    assert all(r["swap_identity_similarity"] for r in rows if r["kind"] == "cross_identity")
    page = (reports / "report.html").read_text()
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == 2 * 3 + 2 * 7
    assert "synthetic" in page
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert np.isclose(run.data.metrics["swap/heser/identity_similarity"],
                      saved["swap"]["heser"]["identity_similarity"])
    assert run.data.metrics["timing/seconds"] == timings["seconds"]
