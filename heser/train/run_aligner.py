"""The `train_aligner` stage: data, trainer, MLflow run, metrics before and after, outputs.

    python -m stages.train_aligner                 # one process
    torchrun --nproc-per-node 2 -m stages.train_aligner   # data parallel, same code path
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from heser.config import Config
from heser.data.kshot import KShotEpisodes
from heser.io import atomic_path, save_png
from heser.train.aligner import AlignerTask
from heser.train.distributed import init_distributed, shutdown_distributed
from heser.train.gan import GanTrainer, fit
from heser.train.tracking import Tracker

EXPERIMENT = "heser-aligner"


def _eval_batches(cfg: Config, batch_size: int) -> list[dict[str, Any]]:
    """A fixed set of held-out episodes from the validation identities."""
    a, t = cfg.aligner, cfg.aligner.train
    probe = KShotEpisodes(cfg.path(cfg.paths.shards), "val", a.k, 1, t.seed, rank=0, world_size=1)
    per_video = math.ceil(t.eval_episodes / len(probe.videos))
    dataset = KShotEpisodes(cfg.path(cfg.paths.shards), "val", a.k, per_video, t.seed,
                            rank=0, world_size=1)
    batches, seen = [], 0
    for batch in DataLoader(dataset, batch_size=batch_size):
        batches.append(batch)
        seen += len(batch["target_key"])
        if seen >= t.eval_episodes:
            break
    return batches


def train_aligner(cfg: Config, checkpoint: Path, reports: Path) -> dict[str, Any]:
    dist = init_distributed()
    a, t = cfg.aligner, cfg.aligner.train
    try:
        torch.manual_seed(t.seed)  # the same initial weights in every process and every rerun
        task = AlignerTask(cfg, dist.device)
        trainer = GanTrainer(task, t, dist)
        dataset = KShotEpisodes(cfg.path(cfg.paths.shards), "train", a.k, t.episodes_per_video,
                                t.seed, rank=dist.rank, world_size=dist.world_size)
        per_process = max(1, t.batch_size // dist.world_size)

        def loader_for_epoch(epoch: int) -> DataLoader:
            dataset.set_epoch(epoch)
            return DataLoader(dataset, batch_size=per_process, num_workers=t.workers)

        eval_batches = _eval_batches(cfg, per_process) if dist.is_main else []
        tracker = Tracker(EXPERIMENT, "train_aligner",
                          {"aligner": a.model_dump(mode="json"), "world_size": dist.world_size,
                           "perceptual": task.perceptual_name,
                           "skipped_videos": len(dataset.skipped)}, dist.is_main)
        before = task.reconstruction_metrics(eval_batches) if dist.is_main else {}
        start, start_step = time.perf_counter(), trainer.step
        history: list[dict[str, float]] = []
        fit(trainer, loader_for_epoch, tracker, checkpoint, history=history,
            evaluate=(lambda: task.reconstruction_metrics(eval_batches)) if dist.is_main else None)
        seconds = time.perf_counter() - start
        if not dist.is_main:
            return {"rank": dist.rank, "steps": trainer.step}  # the main process reports
        after = task.reconstruction_metrics(eval_batches)
        metrics = {"step0": before, "final": after, "steps": trainer.step,
                   "train_seconds": round(seconds, 1), "perceptual": task.perceptual_name,
                   "episodes_per_s": round((trainer.step - start_step) * t.batch_size
                                           / max(seconds, 1e-9), 3)}
        _write_reports(reports, metrics, history, task, eval_batches)
        tracker.metrics({f"final/{k}": v for k, v in after.items()}, trainer.step)
        tracker.artifact(checkpoint, "checkpoints")
        tracker.end()
        return metrics
    finally:
        shutdown_distributed()


def _write_reports(reports: Path, metrics: dict[str, Any], history: list[dict[str, float]],
                   task: AlignerTask, eval_batches: list[dict[str, Any]]) -> None:
    with atomic_path(reports / "aligner.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    columns = sorted({key for row in history for key in row} - {"step"})
    with atomic_path(reports / "aligner_losses.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["step", *columns])
        writer.writeheader()
        writer.writerows(history)
    if eval_batches:
        inputs = task.prepare(eval_batches[0], 0, augment=False)
        task.aligner.eval()
        with torch.no_grad():
            fake = task.animate(inputs)
        task.aligner.train()
        save_png(reports / "aligner_samples.png", task.sample_grid(inputs, {"image": fake}))
