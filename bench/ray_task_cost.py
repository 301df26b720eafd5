"""What one task costs on one local Ray worker: a plain Ray task, a Ray task whose remote function
is created anew for each call (what prefect-ray's RayTaskRunner does on every submit), and an
empty Prefect task on the RayTaskRunner, with the driver's share of the last one.

    python bench/ray_task_cost.py [--tasks 30]

Time per task = (last start - first start) / (tasks - 1) on the one worker; the tasks do
nothing, so it is all overhead. Prefect's temporary server records the task runs.
"""

from __future__ import annotations

import argparse
import os
import time

import ray
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from heser.env import configure_tool_state
from pipelines.preprocess import api_server


def started_at(index: int) -> tuple[int, float]:
    return index, time.time()


prefect_started_at = task(started_at, name="started-at", cache_policy=NO_CACHE)


def _ms_per_task(results: list[tuple[int, float]]) -> float:
    times = sorted(t for _, t in results)
    return 1000 * (times[-1] - times[0]) / (len(times) - 1)


@flow(name="ray-task-cost")
def measure(tasks: int) -> None:
    plain = ray.remote(num_cpus=1)(started_at)
    ray.get(plain.remote(-1))  # the worker is up
    print(f"plain Ray task: {_ms_per_task(ray.get([plain.remote(i) for i in range(tasks)])):.0f}"
          " ms", flush=True)
    fresh = [ray.remote(num_cpus=1)(started_at).remote(i) for i in range(tasks)]
    print(f"Ray task, new remote function per call: {_ms_per_task(ray.get(fresh)):.0f} ms",
          flush=True)
    with remote_options(num_cpus=1):
        prefect_started_at.submit(-1).result()
        start = time.perf_counter()
        futures = [prefect_started_at.submit(i) for i in range(tasks)]
        submit_ms = 1000 * (time.perf_counter() - start) / tasks
        results = [future.result() for future in futures]
    print(f"Prefect task on RayTaskRunner: {_ms_per_task(results):.0f} ms, of which the "
          f"driver's submit {submit_ms:.0f} ms", flush=True)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--tasks", type=int, default=30)
    opts = args.parse_args()
    configure_tool_state()
    os.environ.setdefault("RAY_worker_niceness", "0")  # as bench/preprocess_scaling.py
    runner = RayTaskRunner(init_kwargs={"num_cpus": 1, "object_store_memory": 100 * 2**20,
                                        "include_dashboard": False})
    # A new server database is migrated first: more than the default 20 s on a busy machine.
    with temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}), api_server():
        measure.with_options(task_runner=runner)(opts.tasks)


if __name__ == "__main__":
    main()
