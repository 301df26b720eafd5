"""Throughput of the `preprocess` flow with 1, 2, ... Ray workers, the scaling efficiency, and
where each worker's time went.

    python bench/preprocess_scaling.py [--workers 1 2] [--rows 24] [--nodes] [--set KEY=VALUE]
                                       [--results FILE]

Each setting runs the whole flow on the first ``--rows`` rows of the sample manifest into a
fresh directory (nothing skipped), on a local Ray with ``ray.num_cpus`` = workers (one row per
worker at a time), or with ``--nodes`` on a multi-node cluster on this machine
(heser.cluster.LocalCluster: as many nodes as workers, one CPU each, separate raylets).
The figure is the per-row phase: from the first task submitted to the last one finished, so Ray
and Prefect start-up are left out but each worker's model loading is in.
Efficiency at n workers = speed(n) / (n x speed(1)).

The breakdown splits each worker's share of the phase (workers x phase seconds) by the rows'
completion records: a row ran from ``end - seconds`` to ``end`` (its record's mtime and
``seconds``) in the worker process its attempt log names. "start-up" is the time before a
worker's first row (worker start, imports, Prefect task run creation), "between rows" the gaps
between its rows (Prefect task run bookkeeping, Ray dispatch), "idle at end" the time after its
last row (load imbalance, the driver collecting the last result). The prediction list-schedules
the 1-worker run's row times, in submission order, on n workers with the 1-worker run's
start-up and gap per row: what the efficiency would be with no contention between workers.
"+ others' CPU" adds the CPU that the driver, the Prefect server and Ray's own processes used
in the 1-worker run (where they had a free core), divided by n, once there are as many workers
as cores: then they take it from the workers.

``--results FILE`` appends each setting's measurement to FILE (JSON lines) and reports every
setting in it, so that settings measured one per run (``--workers 1``, then ``--workers 2``)
make one table; the first line is the 1-worker baseline. ``--workers`` with no number runs
nothing and reports FILE.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

from heser.cluster import LocalCluster
from heser.config import Config, load_config, parse_override
from heser.env import configure_tool_state
from heser.face.backends import make_face_backend, make_parser
from heser.preprocess.resumable import ATTEMPTS_DIR, DONE_DIR
from pipelines.preprocess import api_server, preprocess

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    key: str
    pid: str
    start: float
    end: float


@dataclass(frozen=True)
class Setting:
    workers: int
    rows: int
    tasks: int
    samples: int
    seconds: float  # the per-row phase
    total: float  # the whole flow call: config, Ray start, plan, the phase, finish()
    timeline: list[Row]
    started: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds in the phase, by process

    @classmethod
    def from_json(cls, line: str) -> Setting:
        fields = json.loads(line)
        return cls(**{**fields, "timeline": [Row(**row) for row in fields["timeline"]]})


class CpuSampler(threading.Thread):
    """CPU time of this process and its descendants (the Prefect server, Ray's processes and its
    workers), sampled every ``period_s`` so that a time window can be cut out afterwards."""

    def __init__(self, period_s: float = 0.25):
        super().__init__(daemon=True)
        self.period_s = period_s
        self.samples: list[tuple[float, dict[int, tuple[str, float]]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stopped.wait(self.period_s):
            snapshot = {}
            for proc in [me, *me.children(recursive=True)]:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        snapshot[proc.pid] = (_kind(proc), times.user + times.system)
                except psutil.Error:
                    continue
            self.samples.append((time.time(), snapshot))

    def window(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds used between ``start`` and ``end`` (wall clock), by kind of process."""
        before = next((s for t, s in reversed(self.samples) if t <= start), {})
        after = next((s for t, s in reversed(self.samples) if t <= end), {})
        used: dict[str, float] = {}
        for pid, (kind, cpu) in after.items():
            used[kind] = used.get(kind, 0.0) + cpu - before.get(pid, (kind, 0.0))[1]
        return used


def _kind(proc: psutil.Process) -> str:
    """Which part of the flow a process is: the driver (this process), the Prefect server, a
    Ray worker (``ray::...``), or Ray's own processes (GCS, raylet, agents)."""
    if proc.pid == os.getpid():
        return "driver"
    command = " ".join(proc.cmdline())
    if "uvicorn" in command or "prefect" in command and "server" in command:
        return "Prefect server"
    return "Ray workers" if proc.name().startswith("ray::") else "Ray system"


def _manifest(rows: int, dest: Path) -> Path:
    lines = (ROOT / "data" / "manifests" / "sample.csv").read_text().splitlines()
    dest.write_text("\n".join(lines[: rows + 1]) + "\n")
    return dest


def _timeline(root: Path) -> list[Row]:
    """Each row's worker process and its start and end (wall clock), from its records."""
    rows = []
    for done in (root / DONE_DIR).glob("*.json"):
        record = json.loads(done.read_text())
        end = done.stat().st_mtime
        last_attempt = (root / ATTEMPTS_DIR / f"{done.stem}.log").read_text().split()
        rows.append(Row(done.stem, last_attempt[-1], end - record["seconds"], end))
    return sorted(rows, key=lambda row: row.start)


def _split(setting: Setting) -> dict[str, float]:
    """Worker-seconds of the phase: rows, start-up, between rows, idle at end."""
    phase_end = setting.started + setting.seconds
    by_pid: dict[str, list[Row]] = {}
    for row in setting.timeline:
        by_pid.setdefault(row.pid, []).append(row)
    parts = {"rows": 0.0, "start-up": 0.0, "between rows": 0.0, "idle at end": 0.0}
    for rows in by_pid.values():
        parts["rows"] += sum(r.end - r.start for r in rows)
        parts["start-up"] += rows[0].start - setting.started
        parts["between rows"] += sum(b.start - a.end for a, b in zip(rows, rows[1:]))
        parts["idle at end"] += phase_end - rows[-1].end
    # Workers that ran no row (more processes than rows) idle the whole phase.
    parts["idle at end"] += max(0, setting.workers - len(by_pid)) * setting.seconds
    parts["processes"] = len(by_pid)
    return parts


def _predicted_seconds(one: Setting, workers: int, submitted: list[str]) -> float:
    """The phase on ``workers`` workers if each row took what it took on one worker: rows
    taken in submission order by the first free worker, each worker paying the 1-worker run's
    start-up once and its mean gap between rows."""
    split = _split(one)
    gap = split["between rows"] / max(1, len(one.timeline) - 1)
    took = {row.key: row.end - row.start for row in one.timeline}
    free = [split["start-up"]] * workers
    for key in submitted:
        heapq.heappush(free, heapq.heappop(free) + took[key] + gap)
    return max(free) - gap


def _model_load_seconds(cfg: Config) -> float:
    """Building the face detector and the parser once, in this process."""
    start = time.perf_counter()
    weights = cfg.path(cfg.paths.weights)
    make_face_backend(cfg, weights), make_parser(cfg, weights)
    return time.perf_counter() - start


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args.add_argument("--rows", type=int, default=24)
    args.add_argument("--nodes", action="store_true",
                      help="one single-CPU Ray node per worker instead of one local Ray")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a parameter, e.g. --set flow.rows_per_task=4")
    args.add_argument("--results", type=Path,
                      help="append each setting to this JSON-lines file and report all in it")
    opts = args.parse_args()
    configure_tool_state()
    overrides = dict(parse_override(s) for s in opts.set)
    cfg = load_config(ROOT / "params.yaml", overrides)
    settings = _measure(opts, overrides) if opts.workers else []
    if opts.results:
        settings = [Setting.from_json(line) for line in opts.results.read_text().splitlines()]
    _report(opts, cfg, settings, _model_load_seconds(cfg))


def _measure(opts: argparse.Namespace, overrides: dict) -> list[Setting]:
    """Run the flow once per ``--workers`` setting; append each to ``--results``."""
    # Ray starts its workers at niceness 15 (below the driver); at 0 they keep their share of a
    # CPU shared with other jobs at nice 19, as on the dev machine.
    os.environ.setdefault("RAY_worker_niceness", "0")
    settings: list[Setting] = []
    sampler = CpuSampler()
    sampler.start()
    # A new server database is migrated first: more than the default 20 s on a busy machine.
    with (temporary_settings({PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 180}),
          tempfile.TemporaryDirectory(prefix="heser-scaling-") as tmp, api_server()):
        manifest = _manifest(opts.rows, Path(tmp) / "manifest.csv")
        for workers in opts.workers:
            root = Path(tmp) / f"w{workers}"
            cluster = LocalCluster(size=workers, num_cpus=1) if opts.nodes else nullcontext()
            with cluster:
                where = ({"ray.address": cluster.address} if opts.nodes
                         else {"ray.num_cpus": workers})
                start = time.perf_counter()
                result = preprocess(str(manifest), overrides={
                    **overrides, "flow.root": str(root), **where})
                total = time.perf_counter() - start
                phase = (result["process_started"], result["process_started"]
                         + result["process_seconds"])
                settings.append(Setting(workers, result["rows"], result["tasks"],
                                        result["metrics"]["total_samples"],
                                        result["process_seconds"], total, _timeline(root),
                                        result["process_started"], sampler.window(*phase)))
                if opts.results:  # before the cluster stops (seconds)
                    with open(opts.results, "a") as fh:
                        fh.write(json.dumps(asdict(settings[-1])) + "\n")
    return settings


def _report(opts: argparse.Namespace, cfg: Config, settings: list[Setting],
            model_load: float) -> None:
    base = settings[0].rows / settings[0].seconds / settings[0].workers
    print(f"\n{platform.processor() or platform.machine()}, crop {cfg.crop.size}px, "
          f"video stride {cfg.crop.video.stride}, max {cfg.crop.video.max_frames} frames, "
          f"at most {cfg.flow.rows_per_task} rows per task, "
          + ("one single-CPU Ray node per worker" if opts.nodes else "one local Ray"))
    print("| Ray workers | rows | tasks | samples | seconds | rows/s | samples/s | efficiency "
          "| whole flow s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in settings:
        speed = s.rows / s.seconds
        print(f"| {s.workers} | {s.rows} | {s.tasks} | {s.samples} | {s.seconds:.1f} | "
              f"{speed:.2f} | {s.samples / s.seconds:.1f} | {speed / (s.workers * base):.2f} "
              f"| {s.total:.1f} |")
    print(f"\nWorker-seconds of the phase (workers x seconds); building the detector and parser "
          f"once takes {model_load:.1f} s here (in each worker's first row)")
    print("| Ray workers | worker-s | rows | start-up | between rows | idle at end "
          "| processes | predicted s (efficiency) | + others' CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    one = settings[0]
    others = sum(cpu for kind, cpu in one.cpu.items() if kind != "Ray workers")
    submitted = [row.key for row in one.timeline]  # the order one worker took them in
    for s in settings:
        split = _split(s)
        share = s.workers * s.seconds
        cells = " | ".join(f"{split[k]:.1f} ({split[k] / share:.0%})"
                           for k in ("rows", "start-up", "between rows", "idle at end"))
        alone = _predicted_seconds(one, s.workers, submitted)
        shared = alone + (others / s.workers if s.workers >= (os.cpu_count() or 1) else 0.0)
        print(f"| {s.workers} | {share:.1f} | {cells} | {split['processes']} | "
              f"{alone:.1f} ({one.seconds / (s.workers * alone):.2f}) | "
              f"{shared:.1f} ({one.seconds / (s.workers * shared):.2f}) |")
    kinds = ("Ray workers", "driver", "Prefect server", "Ray system")
    print(f"\nCPU seconds used in the phase, by process ({os.cpu_count()} cores)")
    print("| Ray workers | phase s | " + " | ".join(kinds) + " | all / phase s |")
    print("|---:|---:|" + "---:|" * (len(kinds) + 1))
    for s in settings:
        print(f"| {s.workers} | {s.seconds:.1f} | "
              + " | ".join(f"{s.cpu.get(kind, 0.0):.1f}" for kind in kinds)
              + f" | {sum(s.cpu.values()) / s.seconds:.2f} |")


if __name__ == "__main__":
    main()
