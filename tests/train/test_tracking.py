"""MLflow logging of a training run against a real local tracking store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
from PIL import Image

from heser.env import STATE_DIR
from heser.train.tracking import Tracker, flatten


def test_run_logs_params_metrics_and_a_tagged_grid(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("heser-test", "unit", {"loss": {"l1": 10}, "k": 4}, enabled=True)
    tracker.metrics({"train/l1": 0.5}, step=3)
    tracker.image(np.full((8, 16, 3), 200, np.uint8), "train", step=3)
    tracker.end()
    run = mlflow.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"loss.l1": "10", "k": "4"}
    assert run.data.metrics["train/l1"] == 0.5
    assert run.info.artifact_uri.startswith((STATE_DIR / "mlartifacts").as_uri())
    local = Path(mlflow.artifacts.download_artifacts(run_id=tracker.run_id,
                                                     artifact_path="samples/train_0000003.png",
                                                     dst_path=str(tmp_path / "dl")))
    assert Image.open(local).text["heser:synthetic"] == "true"


def test_disabled_tracker_on_other_processes_logs_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("heser-test", "unit", {}, enabled=False)
    tracker.metrics({"x": 1.0}, step=1)
    tracker.end()
    assert tracker.run_id is None and mlflow.active_run() is None


def test_flatten_nests_with_dots():
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": "1", "d": "[1, 2]"}
