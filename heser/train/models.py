"""The trainable models, each described once: its params.yaml section, its episodes' K, its
checkpoint, its reports and the sections logged as its parameters.

The training stage, the sweep, ``heser swap`` and the command line read these entries; each task
class (heser.train.aligner / heser.train.blender) names the entry it trains as ``model``. This
module imports no training code, so inference can ask where a checkpoint lives without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heser.config import Config, Train


@dataclass(frozen=True)
class ReportFiles:
    """What a training stage writes under ``paths.reports``: DVC tracks the first three, so
    they hold only what a rerun reproduces; wall-clock figures go to ``timings``."""

    metrics: Path  # <name>.json: held-out metrics before and after training
    losses: Path  # <name>_losses.csv: the logged training losses (DVC plots)
    samples: Path  # <name>_samples.png: held-out sample grid
    timings: Path  # timings/train_<name>.json: seconds and throughput, not tracked by DVC


@dataclass(frozen=True)
class TrainableModel:
    name: str  # its params.yaml section and the stem of its files
    episode_k: Callable[[Config], int]  # sources per K-shot episode
    logged: tuple[str, ...]  # params.yaml sections logged as the MLflow run's parameters

    @property
    def stage(self) -> str:
        """Its DVC stage, stages/train_<name>.py."""
        return f"train_{self.name}"

    @property
    def experiment(self) -> str:
        """The MLflow experiment of its training stage's runs."""
        return f"heser-{self.name}"

    def train(self, cfg: Config) -> Train:
        return getattr(cfg, self.name).train

    def checkpoint(self, cfg: Config) -> Path:
        """The trained model, a DVC output: ``<paths.models>/<name>.pt``."""
        return cfg.path(cfg.paths.models) / f"{self.name}.pt"

    def reports(self, folder: Path) -> ReportFiles:
        return ReportFiles(folder / f"{self.name}.json", folder / f"{self.name}_losses.csv",
                           folder / f"{self.name}_samples.png",
                           folder / "timings" / f"{self.stage}.json")

    def params(self, cfg: Config) -> dict[str, Any]:
        return {section: getattr(cfg, section).model_dump(mode="json")
                for section in self.logged}


ALIGNER = TrainableModel("aligner", lambda cfg: cfg.aligner.k, ("aligner",))
# the blender trains on pairs of frames of one video: the target I_T, and I_T' for the cycle
BLENDER = TrainableModel("blender", lambda cfg: 1, ("blender", "masks"))
MODELS = {model.name: model for model in (ALIGNER, BLENDER)}
