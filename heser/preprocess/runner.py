"""Run a per-item function over many items in worker processes, with a progress bar.

Each worker builds its own heavy state (a face backend, a parser) once, through ``factory``;
``fn(state, item)`` must be a module-level function so it can be sent to a worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")
_STATE: dict[str, Any] = {}


def _init(factory: Callable[..., Any], args: tuple) -> None:
    _STATE["state"] = factory(*args)


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_STATE["state"], item)


def resolve_workers(workers: int, n_items: int) -> int:
    """0 means one per CPU core; never more workers than items."""
    return max(1, min(workers or os.cpu_count() or 1, n_items))


def map_items(fn: Callable[[Any, Item], Result], items: Sequence[Item],
              factory: Callable[..., Any], factory_args: tuple, workers: int,
              desc: str) -> list[Result]:
    workers = resolve_workers(workers, len(items))
    bar = tqdm(total=len(items), desc=desc, unit="item", dynamic_ncols=True)
    results: list[Result] = []
    if workers == 1:
        state = factory(*factory_args)
        for item in items:
            results.append(fn(state, item))
            bar.update()
    else:
        # spawn, not fork: the workers hold TFLite interpreters and torch, neither fork-safe.
        context = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init,
                                 initargs=(factory, factory_args)) as pool:
            for result in pool.map(_call, [fn] * len(items), items):
                results.append(result)
                bar.update()
    bar.close()
    return results
