"""MLflow logging for training runs: parameters, metrics, sample grids, checkpoints.

Only the main process logs. The tracking URI comes from MLFLOW_TRACKING_URI (heser.env points it
at ``sqlite:///.state/mlflow.db`` unless the user set a server). Sample grids are written with
heser.io.save_png, so they carry the synthetic-media tags, then logged as artifacts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from heser.env import STATE_DIR
from heser.io import save_png


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{"loss": {"l1": 10}} -> {"loss.l1": "10"}: MLflow parameters are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _use_experiment(name: str) -> None:
    """Select (or create) the experiment. With a local store, its artifacts go to
    .state/mlartifacts: MLflow's default is ./mlruns in whatever directory the run started."""
    if mlflow.get_experiment_by_name(name) is None and not mlflow.get_tracking_uri().startswith(
            ("http:", "https:", "databricks")):
        mlflow.create_experiment(name, artifact_location=(STATE_DIR / "mlartifacts").as_uri())
    mlflow.set_experiment(name)


class Tracker:
    """A run in an MLflow experiment; every method is a no-op on non-main processes."""

    def __init__(self, experiment: str, run_name: str, params: dict[str, Any], enabled: bool,
                 run_id: str | None = None):
        self.enabled = enabled
        self.run_id = run_id
        if not enabled:
            return
        _use_experiment(experiment)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
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
