"""One GAN training step and loop, shared by the aligner and the blender.

A task (``GanTask``) says how to turn a batch into inputs, how the generator draws a fake (a
dict of tensors whose "image" the discriminator judges), how the discriminator sees it, and
what the generator's losses are; this module does the rest the same way for both: the hinge
discriminator phase, then the generator phase, each with gradient accumulation over
micro-batches, bf16 autocast and channels_last on GPU, data-parallel wrapping under torchrun,
checkpoints with exact resume, MLflow logging and a progress bar.

Under torchrun the trainer wraps the task's networks in DistributedDataParallel once and hands
the wrappers to the task's step methods (as stylegan2-ada-pytorch does); the task keeps only the
bare networks, which checkpoints, evaluation and previews use, so evaluating on the main process
alone makes no collective call.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from heser.config import Train
from heser.losses import hinge_d
from heser.tracking import Tracker
from heser.train.checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from heser.train.distributed import DistInfo, gather_objects, mean_over_processes
from heser.train.models import TrainableModel

Batch = dict[str, Any]
Outputs = dict[str, Tensor]  # the generator's image under "image", plus what its losses need


class GanTask(Protocol):
    """What the trainer and the training stage need of a model. The step methods run the
    networks they are given (the trainer's data-parallel wrappers, or the bare ones);
    ``evaluate`` and ``preview`` run the bare networks, without collective calls."""

    model: ClassVar[TrainableModel]  # the registry entry this task trains
    generator: nn.Module  # the bare networks, checkpointed as they are
    discriminator: nn.Module
    perceptual_name: str  # which features the perceptual loss compares (logged)

    def prepare(self, batch: Batch, step: int) -> Batch: ...
    def fake(self, inputs: Batch, generator: nn.Module) -> Outputs: ...
    def real(self, inputs: Batch) -> Tensor: ...
    def discriminate(self, inputs: Batch, images: Tensor,
                     discriminator: nn.Module) -> tuple[Tensor, list[Tensor]]: ...
    def generator_loss(self, inputs: Batch, fake: Outputs,
                       discriminator: nn.Module) -> tuple[Tensor, dict[str, float]]: ...
    def sample_grid(self, inputs: Batch, fake: Outputs) -> np.ndarray: ...
    def evaluate(self, batches: list[Batch]) -> dict[str, float]: ...
    def preview(self, batch: Batch) -> np.ndarray: ...


def episode_generators(seed: int, step: int, keys: list[str]) -> list[torch.Generator]:
    """One random generator per episode, seeded by (seed, step, target key): an episode's
    augmentation does not depend on how the batch is split over processes or micro-batches."""
    return [torch.Generator().manual_seed(zlib.crc32(f"{seed}:{step}:{key}".encode()))
            for key in keys]


@dataclass
class StepResult:
    losses: dict[str, float]
    inputs: Batch
    fake: Outputs


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """Micro-batches for gradient accumulation: tensors and lists cut along the first axis."""
    size = len(next(iter(v for v in batch.values() if isinstance(v, (Tensor, list)))))
    bounds = np.linspace(0, size, parts + 1).astype(int)
    return [{k: v[a:b] if isinstance(v, (Tensor, list)) else v for k, v in batch.items()}
            for a, b in zip(bounds[:-1], bounds[1:])]


class GanTrainer:
    def __init__(self, task: GanTask, train: Train, dist: DistInfo):
        self.task, self.cfg, self.dist = task, train, dist
        self.device = dist.device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if self.device.type == "cuda" else contextlib.nullcontext())
        if self.device.type == "cuda":
            task.generator.to(memory_format=torch.channels_last)
            task.discriminator.to(memory_format=torch.channels_last)
        # the networks the steps run: under torchrun their data-parallel wrappers, built once
        self.generator, self.discriminator = (
            (DistributedDataParallel(task.generator), DistributedDataParallel(task.discriminator))
            if dist.world_size > 1 else (task.generator, task.discriminator))
        betas = tuple(train.optim.betas)
        self.opt_g = torch.optim.Adam(task.generator.parameters(), train.optim.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(task.discriminator.parameters(), train.optim.lr_d,
                                      betas=betas)
        self.step = 0

    # -- one step ---------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> StepResult:
        micro = [self.task.prepare(part, self.step) for part in
                 split_batch(batch, self.cfg.grad_accum)]
        d_loss = self._discriminator_phase(micro)
        losses, fake = self._generator_phase(micro)
        self.step += 1
        return StepResult({**losses, "d_hinge": d_loss}, micro[-1], fake)

    def _sync(self, module: nn.Module, last: bool):
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if isinstance(module, DistributedDataParallel) and not last:
            return module.no_sync()
        return contextlib.nullcontext()

    def _discriminator_phase(self, micro: list[Batch]) -> float:
        self.opt_d.zero_grad(set_to_none=True)
        total = 0.0
        for i, inputs in enumerate(micro):
            with self._sync(self.discriminator, i == len(micro) - 1), self.autocast:
                with torch.no_grad():
                    fake = self.task.fake(inputs, self.generator)["image"]
                real_logits, _ = self.task.discriminate(inputs, self.task.real(inputs),
                                                        self.discriminator)
                fake_logits, _ = self.task.discriminate(inputs, fake, self.discriminator)
                loss = hinge_d(real_logits.float(), fake_logits.float()) / len(micro)
                loss.backward()
            total += float(loss.detach())
        self.opt_d.step()
        return total

    def _generator_phase(self, micro: list[Batch]) -> tuple[dict[str, float], Outputs]:
        self.opt_g.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, inputs in enumerate(micro):
            with self._sync(self.generator, i == len(micro) - 1), self.autocast:
                fake = self.task.fake(inputs, self.generator)
                loss, items = self.task.generator_loss(inputs, fake, self.discriminator)
                (loss / len(micro)).backward()
            for name, value in items.items():
                sums[name] = sums.get(name, 0.0) + value / len(micro)
        self.opt_g.step()
        return sums, {name: value.detach() for name, value in fake.items()}

    # -- checkpoints ------------------------------------------------------------------------

    def state_dict(self, data_states: list[dict[str, int]],
                   history: list[dict[str, float]]) -> dict[str, Any]:
        """``data_states``: each process's (epoch, batch) position; ``history``: logged losses."""
        return {"step": self.step, "data": data_states, "history": history, "rng": rng_state(),
                "generator": self.task.generator.state_dict(),
                "discriminator": self.task.discriminator.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> tuple[dict[str, int], list]:
        """Restore everything; returns this process's data position and the loss history."""
        data = state["data"]
        if len(data) != self.dist.world_size:
            raise ValueError(f"checkpoint of a {len(data)}-process run; resume it with as many "
                             f"processes (this run has {self.dist.world_size})")
        self.task.generator.load_state_dict(state["generator"])
        self.task.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step = int(state["step"])
        restore_rng(state["rng"])
        return data[self.dist.rank], state["history"]


def batches_from(loader_for_epoch, start_epoch: int, skip: int) -> Iterator[tuple[int, int, Batch]]:
    """(epoch, index in epoch, batch) forever; ``skip`` batches of the first epoch are read and
    dropped, so a resumed run sees exactly the batches an uninterrupted one would."""
    epoch = start_epoch
    while True:
        for index, batch in enumerate(loader_for_epoch(epoch)):
            if epoch == start_epoch and index < skip:
                continue
            yield epoch, index, batch
        epoch += 1


def fit(trainer: GanTrainer, loader_for_epoch, tracker: Tracker, checkpoint: Path,
        history: list[dict[str, float]] | None = None, evaluate=None,
        on_evaluate: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train to ``train.steps``, resuming from ``checkpoint`` if it exists; every logged loss
    row is appended to ``history`` (for the stage's plots). ``evaluate`` runs after each
    checkpoint; ``on_evaluate(step, metrics)`` then sees its metrics with that checkpoint saved
    (a sweep reports both to Ray Tune, whose scheduler may stop the run there)."""
    cfg, main = trainer.cfg, trainer.dist.is_main
    data = {"epoch": 0, "batch": 0}
    history = [] if history is None else history
    if checkpoint.exists():
        data, earlier = trainer.load_state_dict(load_checkpoint(checkpoint))
        history[:0] = earlier
    last: dict[str, float] = {}
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train", disable=not main,
               dynamic_ncols=True)
    stream = batches_from(loader_for_epoch, data["epoch"], data["batch"])
    while trainer.step < cfg.steps:
        epoch, index, batch = next(stream)
        result = trainer.train_step(batch)
        data = {"epoch": epoch, "batch": index + 1}
        step = trainer.step
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = mean_over_processes(result.losses, trainer.dist)
            tracker.metrics({f"train/{k}": v for k, v in last.items()}, step)
            history.append({"step": step, **last})
            bar.set_postfix({k: f"{v:.3f}" for k, v in last.items() if k in ("l1", "total")})
        if step % cfg.sample_every == 0 or step == cfg.steps:
            tracker.image(trainer.task.sample_grid(result.inputs, result.fake), "train", step)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            positions = gather_objects(data, trainer.dist)  # every rank's, for exact resume
            if main:
                save_checkpoint(checkpoint, trainer.state_dict(positions, history))
            if evaluate is not None:
                metrics = evaluate()
                tracker.metrics({f"val/{k}": v for k, v in metrics.items()}, step)
                if on_evaluate is not None:
                    on_evaluate(step, metrics)
        bar.update()
    bar.close()
    return last
