"""Checkpoints: everything an exact resume needs, saved atomically, loaded with weights_only.

Only tensors, numbers, strings and containers go in (RNG states as tensors), so
``torch.load(weights_only=True)`` reads them without unpickling arbitrary objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from heser.io import atomic_path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"{path}: not a readable heser checkpoint ({exc})") from exc


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
