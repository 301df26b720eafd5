"""Data parallelism through torchrun (torch.distributed): one process per GPU, or several CPU
processes with gloo. A plain ``python`` run is the one-process case of the same code path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = (torch.device("cuda", local_rank) if torch.cuda.is_available()
              else torch.device("cpu"))
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, world_size, device)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average logged scalars over the processes (each saw a different part of the batch)."""
    if info.world_size == 1 or not values:
        return values
    tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=info.device)
    dist.all_reduce(tensor)
    return dict(zip(values, (tensor / info.world_size).tolist()))


def gather_objects(value: object, info: DistInfo) -> list[object]:
    """Every process's ``value``, in rank order (small picklable things only)."""
    if info.world_size == 1:
        return [value]
    gathered: list[object] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered
