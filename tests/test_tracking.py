"""MLflow logging of a training run against a real local tracking store."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import mlflow
import numpy as np
from PIL import Image

from heser import tracking
from heser.env import STATE_DIR
from heser.tracking import EXPERIMENT_KIND, Tracker, flatten, run_name


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


def test_experiments_open_on_the_training_runs_table(tmp_path: Path, monkeypatch):
    """MLflow 3 shows an untagged experiment as a GenAI one; ours are tagged as model training,
    also one created before the tag existed, when it is next used."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    client.create_experiment("heser-old")
    for experiment in ("heser-new", "heser-old"):
        Tracker(experiment, run_name("train_aligner"), {}, enabled=True).end()
        tags = client.get_experiment_by_name(experiment).tags
        assert tags[EXPERIMENT_KIND[0]] == "custom_model_development"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_runs_are_named_by_what_they_are_the_code_and_when(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    checkout = tmp_path / "checkout"  # the project's code as a git checkout of its own
    checkout.mkdir()
    (checkout / "code.py").write_text("x = 1\n")
    _git(checkout, "init", "-q")
    _git(checkout, "add", "code.py")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    revision = _git(checkout, "rev-parse", "--short", "HEAD")
    monkeypatch.setattr(tracking, "ROOT", checkout)
    tracker = Tracker("heser-finetune", run_name("finetune", "alice"), {}, enabled=True)
    tracker.end()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d"  # UTC start time
    name = mlflow.get_run(tracker.run_id).info.run_name
    assert re.fullmatch(rf"finetune alice {revision} {stamp}", name), name
    (checkout / "code.py").write_text("x = 2\n")  # uncommitted changes: marked
    assert re.fullmatch(rf"train_aligner {revision}\+ {stamp}", run_name("train_aligner"))
    monkeypatch.setattr(tracking, "ROOT", tmp_path / "elsewhere")  # not a checkout
    assert re.fullmatch(rf"sweep asha {stamp}", run_name("sweep", "asha"))


def test_disabled_tracker_on_other_processes_logs_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    tracker = Tracker("heser-test", "unit", {}, enabled=False)
    tracker.metrics({"x": 1.0}, step=1)
    tracker.end()
    assert tracker.run_id is None and mlflow.active_run() is None


def test_flatten_nests_with_a_separator():
    assert flatten({"a": {"b": {"c": 1}}, "d": [1, 2]}) == {"a.b.c": 1, "d": [1, 2]}
    assert flatten({"blender": {"head_psnr": 30.0}}, "/") == {"blender/head_psnr": 30.0}
