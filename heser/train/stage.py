"""A training stage: data, trainer, MLflow run, held-out metrics before and after, outputs.
The aligner and the blender stages are this function with their own task.

    python -m stages.train_aligner                          # one process
    torchrun --nproc-per-node 2 -m stages.train_aligner     # data parallel, same code path
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from heser.config import Config, Train
from heser.data.kshot import KShotEpisodes
from heser.io import atomic_path, save_png
from heser.train.distributed import init_distributed, shutdown_distributed
from heser.train.gan import GanTask, GanTrainer, fit
from heser.train.tracking import Tracker


def eval_batches(cfg: Config, k: int, train: Train, batch_size: int) -> list[dict[str, Any]]:
    """A fixed set of held-out episodes (K sources + target) from the validation identities."""
    shards = cfg.path(cfg.paths.shards)
    probe = KShotEpisodes(shards, "val", k, 1, train.seed, rank=0, world_size=1)
    per_video = math.ceil(train.eval_episodes / len(probe.videos))
    dataset = KShotEpisodes(shards, "val", k, per_video, train.seed, rank=0, world_size=1)
    batches, seen = [], 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        batches.append(batch)
        seen += len(batch["target_key"])
        if seen >= train.eval_episodes:
            break
    return batches


@dataclass(frozen=True)
class Evaluation:
    """One held-out evaluation during training, taken right after that step's checkpoint was
    saved: what a stage's ``on_evaluate`` hook receives (a Ray Tune trial reports it)."""

    step: int
    metrics: dict[str, float]  # the task's held-out metrics
    losses: dict[str, float]  # the latest logged training losses
    preview: np.ndarray  # the task's sample grid of held-out episodes


def train_stage(cfg: Config, name: str, make_task: Callable[[Config, torch.device], GanTask],
                train: Train, k: int, checkpoint: Path, reports: Path,
                params: dict[str, Any], track: bool = True,
                on_evaluate: Callable[[Evaluation], None] | None = None) -> dict[str, Any]:
    """Train ``make_task``'s networks on K-shot episodes of the train split; write
    ``<name>.json`` (metrics before/after), ``<name>_losses.csv`` and ``<name>_samples.png``.

    The task also provides ``evaluate(batches) -> dict`` and ``preview(batch) -> image``.
    ``track=False``: no MLflow run of its own (a sweep's driver logs its trials);
    ``on_evaluate`` gets each held-out evaluation on the main process."""
    dist = init_distributed()
    try:
        torch.manual_seed(train.seed)  # the same initial weights in every process and rerun
        task = make_task(cfg, dist.device)
        trainer = GanTrainer(task, train, dist)
        dataset = KShotEpisodes(cfg.path(cfg.paths.shards), "train", k, train.episodes_per_video,
                                train.seed, rank=dist.rank, world_size=dist.world_size)
        per_process = max(1, train.batch_size // dist.world_size)

        def loader_for_epoch(epoch: int) -> DataLoader:
            dataset.set_epoch(epoch)
            return DataLoader(dataset, batch_size=per_process, num_workers=train.workers)

        held_out = eval_batches(cfg, k, train, per_process) if dist.is_main else []
        tracker = Tracker(f"heser-{name}", f"train_{name}",
                          {**params, "world_size": dist.world_size,
                           "perceptual": task.perceptual_name,
                           "skipped_videos": len(dataset.skipped)}, dist.is_main and track)
        before = task.evaluate(held_out) if dist.is_main else {}
        start, start_step = time.perf_counter(), trainer.step
        history: list[dict[str, float]] = []

        def evaluated(step: int, values: dict[str, float]) -> None:
            losses = {key: v for key, v in (history[-1] if history else {}).items()
                      if key != "step"}
            on_evaluate(Evaluation(step, values, losses, task.preview(held_out[0])))

        fit(trainer, loader_for_epoch, tracker, checkpoint, history=history,
            evaluate=(lambda: task.evaluate(held_out)) if dist.is_main else None,
            on_evaluate=evaluated if on_evaluate is not None else None)
        seconds = time.perf_counter() - start
        if not dist.is_main:
            return {"rank": dist.rank, "steps": trainer.step}  # the main process reports
        after = task.evaluate(held_out)
        metrics = {"step0": before, "final": after, "steps": trainer.step,
                   "train_seconds": round(seconds, 1), "perceptual": task.perceptual_name,
                   "episodes_per_s": round((trainer.step - start_step) * train.batch_size
                                           / max(seconds, 1e-9), 3)}
        _write_reports(reports, name, metrics, history, task.preview(held_out[0]))
        tracker.metrics({f"final/{k}": v for k, v in _flat(after).items()}, trainer.step)
        tracker.artifact(checkpoint, "checkpoints")
        tracker.end()
        return metrics
    finally:
        shutdown_distributed()


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = float(value)
    return flat


def _write_reports(reports: Path, name: str, metrics: dict[str, Any],
                   history: list[dict[str, float]], preview) -> None:
    with atomic_path(reports / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    columns = sorted({key for row in history for key in row} - {"step"})
    with atomic_path(reports / f"{name}_losses.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", *columns])
        writer.writeheader()
        writer.writerows(history)
    save_png(reports / f"{name}_samples.png", preview)
