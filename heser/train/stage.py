"""A training stage: data, trainer, MLflow run, held-out metrics before and after, outputs.
The aligner and the blender stages are this function with their own task class (whose
``model`` entry, heser.train.models, says its section, K, checkpoint and reports).

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
from heser.tracking import Tracker, flatten, run_name
from heser.train.distributed import init_distributed, shutdown_distributed
from heser.train.gan import GanTask, GanTrainer, fit
from heser.train.models import ReportFiles


def landmark_motion(cfg: Config) -> bool:
    """Whether episodes carry the target's landmarks: the aligner's landmark motion input reads
    them (the blender's episodes carry them too, unread, so both stages share one loader)."""
    return cfg.aligner.motion_input == "landmarks"


def eval_batches(cfg: Config, k: int, train: Train, batch_size: int) -> list[dict[str, Any]]:
    """A fixed set of held-out episodes (K sources + target) from the validation identities."""
    shards = cfg.path(cfg.paths.shards)
    probe = KShotEpisodes(shards, "val", k, 1, train.seed, rank=0, world_size=1)
    per_video = math.ceil(train.eval_episodes / len(probe.videos))
    dataset = KShotEpisodes(shards, "val", k, per_video, train.seed, rank=0, world_size=1,
                            landmarks=landmark_motion(cfg))
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


@dataclass(frozen=True)
class StageOptions:
    """Where a run differs from the DVC stage's (a sweep trial's, a test's)."""

    checkpoint: Path | None = None  # default: the model's checkpoint under paths.models
    reports: Path | None = None  # default: paths.reports
    track: bool = True  # False: no MLflow run of its own (a sweep's driver logs its trials)
    on_evaluate: Callable[[Evaluation], None] | None = None  # main process, each evaluation


def train_stage(cfg: Config, task_class: type[GanTask],
                options: StageOptions = StageOptions()) -> dict[str, Any]:
    """Train ``task_class``'s networks on K-shot episodes of the train split, with the
    ``train`` settings of its params.yaml section; write its reports (metrics before/after,
    losses, sample grid; timings apart, see ReportFiles) and return the metrics."""
    model = task_class.model
    train, k = model.train(cfg), model.episode_k(cfg)
    checkpoint = options.checkpoint or model.checkpoint(cfg)
    files = model.reports(options.reports or cfg.path(cfg.paths.reports))
    dist = init_distributed()
    try:
        torch.manual_seed(train.seed)  # the same initial weights in every process and rerun
        task = task_class(cfg, dist.device)
        trainer = GanTrainer(task, train, dist)
        dataset = KShotEpisodes(cfg.path(cfg.paths.shards), "train", k, train.episodes_per_video,
                                train.seed, rank=dist.rank, world_size=dist.world_size,
                                landmarks=landmark_motion(cfg))
        per_process = max(1, train.batch_size // dist.world_size)

        def loader_for_epoch(epoch: int) -> DataLoader:
            dataset.set_epoch(epoch)
            return DataLoader(dataset, batch_size=per_process, num_workers=train.workers)

        held_out = eval_batches(cfg, k, train, per_process) if dist.is_main else []
        tracker = Tracker(model.experiment, run_name(model.stage),
                          {**model.params(cfg), "world_size": dist.world_size,
                           "perceptual": task.perceptual_name,
                           "skipped_videos": len(dataset.skipped)}, dist.is_main and options.track)
        before = task.evaluate(held_out) if dist.is_main else {}
        start, start_step = time.perf_counter(), trainer.step
        history: list[dict[str, float]] = []

        def evaluated(step: int, values: dict[str, float]) -> None:
            losses = {key: v for key, v in (history[-1] if history else {}).items()
                      if key != "step"}
            options.on_evaluate(Evaluation(step, values, losses, task.preview(held_out[0])))

        fit(trainer, loader_for_epoch, tracker, checkpoint, history=history,
            evaluate=(lambda: task.evaluate(held_out)) if dist.is_main else None,
            on_evaluate=evaluated if options.on_evaluate is not None else None)
        seconds = time.perf_counter() - start
        if not dist.is_main:
            return {"rank": dist.rank, "steps": trainer.step}  # the main process reports
        after = task.evaluate(held_out)
        metrics = {"step0": before, "final": after, "steps": trainer.step,
                   "perceptual": task.perceptual_name}
        if hasattr(task, "given"):  # what each method of the held-out comparison is given
            metrics["given"] = task.given
        timings = {"train_seconds": round(seconds, 1), "steps_run": trainer.step - start_step,
                   "world_size": dist.world_size,
                   "episodes_per_s": round((trainer.step - start_step) * train.batch_size
                                           / max(seconds, 1e-9), 3)}
        _write_reports(files, metrics, timings, history, task.preview(held_out[0]))
        tracker.metrics({f"final/{k}": float(v) for k, v in flatten(after, "/").items()},
                        trainer.step)
        tracker.metrics({f"timing/{k}": float(v) for k, v in timings.items()}, trainer.step)
        tracker.artifact(checkpoint, "checkpoints")
        tracker.end()
        return metrics
    finally:
        shutdown_distributed()


def _write_reports(files: ReportFiles, metrics: dict[str, Any], timings: dict[str, Any],
                   history: list[dict[str, float]], preview: np.ndarray) -> None:
    """The DVC-tracked reports hold only what a rerun reproduces; the wall-clock figures go
    beside them, untracked (a rerun with byte-identical models leaves dvc.lock unchanged)."""
    with atomic_path(files.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    columns = sorted({key for row in history for key in row} - {"step"})
    with atomic_path(files.losses) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", *columns])
        writer.writeheader()
        writer.writerows(history)
    save_png(files.samples, preview)
    files.timings.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(files.timings) as tmp:
        tmp.write_text(json.dumps(timings, indent=2) + "\n")
