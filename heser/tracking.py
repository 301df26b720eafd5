"""MLflow logging for training runs: parameters, metrics, sample grids, checkpoints.

Only the main process logs. The tracking URI comes from MLFLOW_TRACKING_URI (heser.env points it
at ``sqlite:///.state/mlflow.db`` unless the user set a server). Sample grids are written with
heser.io.save_png, so they carry the synthetic-media tags, then logged as artifacts.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from heser.config import ROOT
from heser.env import STATE_DIR
from heser.io import save_png

# MLflow 3 opens an experiment on the page of its kind: without this tag it guesses, and shows
# the GenAI overview (traces, evaluations) for ours; "custom_model_development" ("Machine
# learning" in the UI) opens the table of training runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def flatten(tree: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """{"loss": {"l1": 10}} -> {"loss.l1": 10}: MLflow's parameters and metrics are flat."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, sep, f"{name}{sep}"))
        else:
            flat[name] = value
    return flat


def run_name(*what: str) -> str:
    """A run's name: what it is (``train_aligner``; ``sweep``, ``blender``) and what tells
    it from the experiment's other runs: the code's git revision and the UTC start time, e.g.
    ``train_aligner 3f2a9c1 2026-12-01 19:40``."""
    return " ".join([*what, *filter(None, [_git_revision()]),
                     time.strftime("%Y-%m-%d %H:%M", time.gmtime())])


def _git_revision() -> str | None:
    """The checkout's short commit (a "+" when it has uncommitted changes), None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, timeout=10,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, timeout=10, capture_output=True, text=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+" if dirty.strip() else "")


def use_experiment(name: str) -> str:
    """Select (or create) the experiment, tagged as one of training runs; its id. With a local
    store, its artifacts go to .state/mlartifacts: MLflow's default is ./mlruns in whatever
    directory the run started."""
    if mlflow.get_experiment_by_name(name) is None and not mlflow.get_tracking_uri().startswith(
            ("http:", "https:", "databricks")):
        mlflow.create_experiment(name, artifact_location=(STATE_DIR / "mlartifacts").as_uri())
    experiment = mlflow.set_experiment(name)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow.set_experiment_tag(*EXPERIMENT_KIND)
    return experiment.experiment_id


class Tracker:
    """A run in an MLflow experiment; every method is a no-op on non-main processes."""

    def __init__(self, experiment: str, name: str, params: dict[str, Any], enabled: bool,
                 run_id: str | None = None):
        """``name``: the new run's name (see ``run_name``); ``run_id``: continue that run."""
        self.enabled = enabled
        self.run_id = run_id
        if not enabled:
            return
        use_experiment(experiment)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else name)
        self.run_id = run.info.run_id
        if run_id is None:  # a resumed run keeps the parameters it started with
            mlflow.log_params(flatten(params))

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.enabled:
            mlflow.log_metrics(values, step=step)

    def image(self, grid: np.ndarray, name: str, step: int) -> None:
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}_{step:07d}.png"
            save_png(path, grid)
            mlflow.log_artifact(str(path), artifact_path="samples")

    def artifact(self, path: Path, folder: str) -> None:
        if self.enabled:
            mlflow.log_artifact(str(path), artifact_path=folder)

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled:
            mlflow.end_run(status=status)
