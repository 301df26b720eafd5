"""The Prefect flow `preprocess`: download -> crop -> parse per manifest row on Ray, then shards.

Each batch of at most ``flow.rows_per_task`` rows is one Prefect task run on a Ray worker
(prefect-ray's RayTaskRunner), longest rows first, calling the same heser functions as the DVC
stages (heser.preprocess.resumable wraps crop_item and parse_item). Rows whose outputs are up to
date are skipped; a failing row is retried, then reported. With ``ray.address`` set the tasks
run on that cluster; a task lost with its node is run again elsewhere, and its completion records
say which nodes tried each row.

    python pipelines/preprocess.py serve     # register deployment preprocess/preprocess, run it
    python pipelines/preprocess.py run [--manifest M] [--set KEY=VALUE ...]   # one run, here

With a server (see the README), start a run of the served deployment with
    prefect deployment run preprocess/preprocess -p manifest=data/manifests/sample.csv
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from queue import SimpleQueue
from typing import Any, NamedTuple

import ray
from prefect import flow, get_run_logger, serve, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments.runner import RunnerDeployment
from prefect.futures import PrefectFuture
from prefect_ray import RayTaskRunner
from prefect_ray.context import remote_options

from heser.cluster import ray_init_kwargs
from heser.config import (
    DEFAULT_PARAMS,
    Config,
    add_config_arguments,
    config_from_args,
    exit_on_error,
    load_config,
    overrides_from_args,
)
from heser.env import configure_tool_state
from heser.preprocess.resumable import (
    RowBatch,
    VideoJob,
    VideoOutcome,
    after_failure,
    fetch_weights,
    finish,
    flow_config,
    longest_first,
    plan,
    process_batch,
    summary_markdown,
    take_batch,
    tally,
)
from heser.rejects import Reject

DEPLOYMENT = "preprocess"


class Processed(NamedTuple):
    """What the per-row subflow hands back: the planned rows, the manifest's bad rows, each
    row's outcome, how many tasks ran them, the wall-clock time (Unix) of the first task
    submitted, and the seconds from then to the last one finished."""

    jobs: list[VideoJob]
    manifest_rejects: list[Reject]
    outcomes: list[VideoOutcome]
    tasks: int
    started: float
    seconds: float


# The task is the library function itself, so a worker needs nothing from this file to run it.
# Our completion records decide what to redo, so Prefect's own result cache stays out of it.
preprocess_rows = task(process_batch, name="preprocess-video", task_run_name="{batch.name}",
                       cache_policy=NO_CACHE)


# Its parameters are the parent flow's objects, not user input: no pydantic validation (which
# cannot resolve their types when a deployment loads this file by path). They stay small (the
# manifest's path, not its rows): Prefect refuses flow runs with over 512 KB of parameters.
@flow(name="preprocess-videos", validate_parameters=False)
def preprocess_videos(manifest: Path, cfg: Config, run_id: str) -> Processed:
    """Plan the manifest's rows and run them as tasks on the Ray task runner, longest rows
    first, in batches that shrink towards the end (``take_batch``). Only twice as many tasks
    as Ray has workers are submitted at a time: Ray starts queued tasks in no particular order,
    so this keeps the order, and the driver holds a bounded number of futures."""
    logger = get_run_logger()
    jobs, manifest_rejects = plan(cfg, manifest)
    logger.info(f"{len(jobs)} rows to preprocess into {cfg.path(cfg.flow.root)}; "
                f"{len(manifest_rejects)} manifest rows rejected")
    started, start = time.time(), time.perf_counter()
    rows_task = preprocess_rows.with_options(retries=cfg.flow.retries,
                                             retry_delay_seconds=cfg.flow.retry_delay_s)
    pending = deque(longest_first(jobs))
    running: dict[PrefectFuture, RowBatch] = {}
    finished: SimpleQueue[PrefectFuture] = SimpleQueue()
    outcomes: list[VideoOutcome] = []
    tasks, every = 0, max(1, len(jobs) // 20)
    # max_retries: Ray re-runs a task whose worker process or node died (Prefect never saw it
    # fail); the rows it had finished are found up to date.
    with remote_options(num_cpus=cfg.flow.cpus_per_task, max_retries=cfg.flow.retries):
        while pending or running:
            workers = _ray_workers(cfg)
            while pending and len(running) < 2 * workers:
                batch = take_batch(pending, cfg.flow.rows_per_task, workers)
                future = rows_task.submit(batch, cfg, run_id)
                future.add_done_callback(finished.put)
                running[future], tasks = batch, tasks + 1
            future = finished.get()
            before = len(outcomes)
            outcomes += _outcomes(future, running.pop(future), cfg, run_id)
            if len(outcomes) // every > before // every or len(outcomes) == len(jobs):
                counts = tally(outcomes)
                logger.info(f"{len(outcomes)}/{len(jobs)} rows: done {counts['done']}, "
                            f"skipped {counts['skipped']}, rejected {counts['rejected']}")
    outcomes.sort(key=lambda outcome: outcome.key)
    return Processed(jobs, manifest_rejects, outcomes, tasks, started,
                     time.perf_counter() - start)


def _ray_workers(cfg: Config) -> int:
    """How many tasks Ray can run at once now (nodes may join or be lost during a run)."""
    return max(1, int(ray.cluster_resources().get("CPU", 0) // cfg.flow.cpus_per_task))


def _outcomes(future: PrefectFuture, batch: RowBatch, cfg: Config,
              run_id: str) -> list[VideoOutcome]:
    future.wait()
    if future.state.is_completed():
        return future.result()
    reason = f"failed after {cfg.flow.retries + 1} attempts: {future.state.message}"
    return [after_failure(job, cfg, run_id, reason) for job in batch.jobs]


@flow(name="preprocess")
def preprocess(manifest: str | None = None, params: str | None = None,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Preprocess a manifest into WebDataset shards under ``flow.root``.

    manifest: CSV of files (default: assets.data_manifest); params: parameters file (default:
    the project's params.yaml); overrides: dotted parameters, e.g. {"crop.size": 512}.
    """
    logger = get_run_logger()
    cfg = flow_config(load_config(params or DEFAULT_PARAMS, overrides))
    fetch_weights(cfg)
    runner = RayTaskRunner(init_kwargs=ray_init_kwargs(cfg.ray))
    run_id = uuid.uuid4().hex  # names this run in the completion records
    jobs, manifest_rejects, outcomes, tasks, started, seconds = preprocess_videos.with_options(
        task_runner=runner)(cfg.path(manifest or cfg.assets.data_manifest), cfg, run_id)
    metrics = finish(cfg, jobs, outcomes, manifest_rejects)
    create_markdown_artifact(key="preprocess-summary", markdown=summary_markdown(outcomes, metrics),
                             description="Rows done / skipped / rejected, samples per split")
    counts = tally(outcomes)
    logger.info(f"finished: {counts}; samples {metrics['samples']}")
    return {**counts, "rows": len(jobs), "tasks": tasks, "process_started": started,
            "process_seconds": seconds, "metrics": metrics}


ENTRYPOINT = "pipelines.preprocess:preprocess"


def deployment() -> RunnerDeployment:
    """The deployment ``preprocess/preprocess``. Its entrypoint is a module path (pipelines/ is
    installed with heser), never this file's path or ``__main__``: the flow runs in a fresh
    process, and Ray workers unpickle its objects by module name."""
    runner_deployment = preprocess.to_deployment(name=DEPLOYMENT)
    runner_deployment.entrypoint = ENTRYPOINT
    return runner_deployment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python pipelines/preprocess.py",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help=f"register deployment preprocess/{DEPLOYMENT} and run its runs")
    run = sub.add_parser("run", help="run the flow once in this process")
    run.add_argument("--manifest", help="manifest CSV (default: assets.data_manifest)")
    add_config_arguments(run, "ray.num_cpus=2")
    args = parser.parse_args(argv)
    configure_tool_state()
    with exit_on_error("preprocess", RuntimeError):
        if args.command == "serve":
            _require_server()
            serve(deployment())
        else:
            config_from_args(args)  # fail early, before any server or Ray starts
            with api_server():
                result = preprocess(args.manifest, str(args.params), overrides_from_args(args))
            print({k: v for k, v in result.items() if k != "metrics"})


@contextmanager
def api_server() -> Iterator[None]:
    """The configured Prefect server, or Prefect's temporary one on 127.0.0.1 for this run.

    Left to itself Prefect would start that temporary server too, but without putting its URL
    in the settings, which is what reaches the Ray workers (through the task context): each
    worker would start a private server and record its task runs there. Prefect stops the
    server at exit, after its log and event workers have drained."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    server = SubprocessASGIServer()
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def _require_server() -> None:
    """A served deployment needs a running Prefect server that `prefect deployment run` also
    reaches; without PREFECT_API_URL Prefect would start a private temporary one."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError("PREFECT_API_URL is not set: start a server with `prefect server "
                           "start` and export PREFECT_API_URL=http://127.0.0.1:4200/api")


if __name__ == "__main__":
    main()
