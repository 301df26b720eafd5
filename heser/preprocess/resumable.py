"""Preprocess manifest rows end to end (fetch -> crop -> parse), resumably.

The Prefect flow (pipelines/preprocess.py) runs ``process_batch`` as one Ray task per batch of
at most ``flow.rows_per_task`` rows (``take_batch``: longest rows first, batches that shrink
towards the end of the run), with the same crop and parse functions as the DVC stages. Each
finished row leaves a completion record, ``<root>/done/<video_key>.json``, written last and
atomically, holding the input's sha256, the fingerprint of every parameter that shapes the
outputs, the flow run that made it and the Ray node of every attempt at it. A rerun skips rows
whose record matches and redoes the rest, so a crash, or a lost node, costs only the rows that
were in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import ray

import heser
from heser import assets
from heser.config import Config, Paths
from heser.data.media import is_video
from heser.face.backends import make_face_backend, make_parser
from heser.face.types import FaceBackend, FaceParser
from heser.io import atomic_path
from heser.preprocess.crop import crop_item
from heser.preprocess.errors import StageError
from heser.preprocess.items import INVENTORY, MediaItem, write_inventory
from heser.preprocess.parse import parse_item
from heser.preprocess.stages import run_shard
from heser.rejects import REJECTS_FILE, Reject, write_rejects

DONE_DIR = "done"
ATTEMPTS_DIR = "attempts"
STAGE = "preprocess"
Status = Literal["done", "skipped", "rejected"]


@dataclass(frozen=True)
class VideoJob:
    """One manifest row and the key that names its outputs (``<identity>__<video>``)."""

    row: assets.AssetRow
    key: str


@dataclass(frozen=True)
class RowBatch:
    """The rows of one task, processed one after the other by the same worker."""

    jobs: tuple[VideoJob, ...]

    @property
    def name(self) -> str:
        """The task run's name: the first row's key, and how many rows follow it."""
        more = len(self.jobs) - 1
        return self.jobs[0].key + (f" +{more}" if more else "")


@dataclass
class VideoOutcome:
    """What became of a row. ``status`` "done" means processed by this flow run, "skipped" up to
    date from an earlier one. ``attempts`` lists the Ray node (id) of every start of the row in
    the run that finished it, so a row retried after a lost worker or node shows two or more;
    ``node`` is the one that finished it."""

    file: str
    key: str
    status: Status
    sha256: str = ""
    samples: int = 0
    rejects: list[Reject] = field(default_factory=list)
    seconds: float = 0.0
    node: str = ""
    attempts: list[str] = field(default_factory=list)


class RowsFailed(RuntimeError):
    """Some rows of a batch raised; the others finished and left their records."""


def flow_config(cfg: Config) -> Config:
    """``cfg`` with every output path moved under ``flow.root`` (same layout as ``paths``)."""
    root = cfg.path(cfg.flow.root)
    paths = Paths(**{name: root / name for name in Paths.model_fields})
    return cfg.model_copy(update={"paths": paths})


def fingerprint(cfg: Config) -> str:
    """Hash of what the outputs depend on: crop and parse parameters, the weights manifest, and
    the heser version (code changes within a version are not seen; delete done/ to redo)."""
    weights = cfg.path(cfg.assets.weights_manifest).read_bytes()
    state = {
        "crop": cfg.crop.model_dump(mode="json"),
        "parse": cfg.parse.model_dump(mode="json"),
        "weights": hashlib.sha256(weights).hexdigest(),
        "heser": heser.__version__,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def plan(cfg: Config, manifest: Path) -> tuple[list[VideoJob], list[Reject]]:
    """The jobs of a manifest (media rows; ``weights`` rows are not inputs). Corrupt rows, and
    rows whose key another row already took, are rejects."""
    rows, rejects = assets.read_manifest(manifest)
    jobs: dict[str, VideoJob] = {}
    for row in (r for r in rows if r.kind != "weights"):
        key = _item(row, cfg).video_key
        if key in jobs:
            rejects.append(Reject(STAGE, row.file, -1,
                                  f"output key {key} is already used by {jobs[key].row.file}"))
            continue
        jobs[key] = VideoJob(row, key)
    return list(jobs.values()), rejects


def fetch_weights(cfg: Config) -> int:
    """Fetch the weights manifest once, before the per-row tasks need it."""
    rows, bad_rows = assets.read_manifest(cfg.path(cfg.assets.weights_manifest))
    fetched, failed = assets.fetch_all(rows, cfg.path(cfg.paths.weights),
                                       assets.mirror_dirs(cfg.assets.mirrors, cfg.root),
                                       retries=cfg.assets.retries, timeout_s=cfg.assets.timeout_s,
                                       stage="weights")
    problems = bad_rows + failed
    if problems:
        listing = "\n".join(f"  {r.file}: {r.reason}" for r in problems)
        raise StageError(f"weights manifest {cfg.assets.weights_manifest}:\n{listing}")
    return len(fetched)


def longest_first(jobs: list[VideoJob]) -> list[VideoJob]:
    """The rows by decreasing expected work, so that a run ends on short rows and its workers
    finish together (longest processing time first). Known before anything is fetched: videos
    (up to ``crop.video.max_frames`` samples each) before photos (one), then larger files first
    (the manifest's ``bytes``; rows without it last of their kind)."""
    def expected_work(job: VideoJob) -> tuple[bool, int]:  # ascending: videos, then big files
        video = job.row.kind == "video" or is_video(Path(job.row.file))
        return not video, -(job.row.bytes or 0)

    return sorted(jobs, key=expected_work)


def take_batch(pending: deque[VideoJob], most: int, workers: int) -> RowBatch:
    """The next task's rows, from the front of ``pending``: a share of what is left that
    shrinks as the run goes on (guided self-scheduling), never more than ``most``. Large tasks
    save per-task overhead while there is plenty of work; the last tasks are single rows, so
    no worker is left with a long task while the others idle."""
    size = min(most, max(1, math.ceil(len(pending) / (2 * workers))))
    return RowBatch(tuple(pending.popleft() for _ in range(min(size, len(pending)))))


def process_batch(batch: RowBatch, cfg: Config, run_id: str) -> list[VideoOutcome]:
    """``process_video`` on each row of the batch. A row that raises does not stop the others;
    the batch then raises ``RowsFailed`` naming them, so the caller retries the batch, where the
    rows that finished are found up to date."""
    outcomes, failures = [], []
    for job in batch.jobs:
        try:
            outcomes.append(process_video(job, cfg, run_id))
        except Exception as exc:  # noqa: BLE001 - reported, and raised again below
            failures.append(f"{job.row.file}: {type(exc).__name__}: {exc}")
    if failures:
        raise RowsFailed("; ".join(failures))
    return outcomes


def process_video(job: VideoJob, cfg: Config, run_id: str = "") -> VideoOutcome:
    """Fetch, crop and parse one row, or skip it if its completion record still holds.

    An input that cannot be used (corrupt video, no face) is a finished row with rejects; an
    exception (a network failure, a full disk) propagates so the caller can retry the row.
    ``run_id`` names the flow run: a row it already finished (then the task was retried, or
    re-executed by Ray after a lost node) comes back "done", not "skipped"."""
    start = time.perf_counter()
    record = _read_record(cfg, job.key)
    if record is not None and _still_valid(record, job, cfg):
        return _recorded_outcome(record, run_id)
    _record_path(cfg, job.key).unlink(missing_ok=True)
    _log_attempt(cfg, job.key, run_id)
    local = assets.fetch(job.row, cfg.path(cfg.paths.raw),
                         assets.mirror_dirs(cfg.assets.mirrors, cfg.root),
                         retries=cfg.assets.retries, timeout_s=cfg.assets.timeout_s,
                         progress=False)
    sha256 = job.row.sha256 or assets.sha256_file(local)
    backend, parser = _tools(cfg)
    crop_tar = cfg.path(cfg.paths.crops) / f"{job.key}.tar"
    cropped = crop_item(_item(job.row, cfg, sha256), backend, cfg, crop_tar)
    parsed = parse_item(crop_tar, parser, cfg.path(cfg.paths.parse) / crop_tar.name,
                        cfg.parse.min_face_share)
    outcome = VideoOutcome(job.row.file, job.key, "done" if parsed.samples else "rejected",
                           sha256, parsed.samples, cropped.rejects + parsed.rejects,
                           time.perf_counter() - start, _node_id(), _attempts(cfg, job.key, run_id))
    _write_record(cfg, outcome, run_id)
    return outcome


def after_failure(job: VideoJob, cfg: Config, run_id: str, reason: str) -> VideoOutcome:
    """The outcome of a row whose task kept failing after its retries: what its completion
    record says if this run finished the row before the failure (another row of its batch
    failed), else a reject, and no outputs used."""
    record = _read_record(cfg, job.key)
    if record is not None and record.get("run_id") == run_id and _still_valid(record, job, cfg):
        return _recorded_outcome(record, run_id)
    return failed_outcome(job, reason)


def finish(cfg: Config, jobs: list[VideoJob], outcomes: list[VideoOutcome],
           manifest_rejects: list[Reject]) -> dict[str, object]:
    """The stage reports of the finished rows, then shards, index and the merged reports."""
    by_key = {job.key: job for job in jobs}
    finished = [o for o in outcomes if o.sha256]  # rows that got as far as a completion record
    inventory = [{"file": o.file, "identity": by_key[o.key].row.identity,
                  "kind": by_key[o.key].row.kind, "sha256": o.sha256,
                  "bytes": (cfg.path(cfg.paths.raw) / o.file).stat().st_size,
                  "source": "flow"} for o in finished]
    write_inventory(cfg.path(cfg.paths.raw) / INVENTORY, inventory)
    rejects = [r for o in outcomes for r in o.rejects]
    write_rejects(cfg.path(cfg.paths.raw) / REJECTS_FILE,
                  manifest_rejects + [r for r in rejects if r.stage == STAGE])
    for stage, out_dir in (("crop", cfg.paths.crops), ("parse", cfg.paths.parse)):
        write_rejects(cfg.path(out_dir) / REJECTS_FILE, [r for r in rejects if r.stage == stage])
    return run_shard(cfg, [o.key for o in finished])


def failed_outcome(job: VideoJob, reason: str) -> VideoOutcome:
    """A row whose task kept failing after its retries: a reject, and no outputs used."""
    return VideoOutcome(job.row.file, job.key, "rejected",
                        rejects=[Reject(STAGE, job.row.file, -1, reason)])


def _item(row: assets.AssetRow, cfg: Config, sha256: str = "") -> MediaItem:
    path = cfg.path(cfg.paths.raw) / row.file
    kind = "video" if row.kind == "video" or is_video(path) else "image"
    return MediaItem(row.file, path, row.identity, kind, sha256)


# ---------------------------------------------------------------------------------------------
# Completion records


def _record_path(cfg: Config, key: str) -> Path:
    return cfg.path(cfg.flow.root) / DONE_DIR / f"{key}.json"


def _read_record(cfg: Config, key: str) -> dict | None:
    try:
        return json.loads(_record_path(cfg, key).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _recorded_outcome(record: dict, run_id: str) -> VideoOutcome:
    fields = {name: record[name] for name in VideoOutcome.__dataclass_fields__ if name in record}
    fields["rejects"] = [Reject(**r) for r in record["rejects"]]
    if not (run_id and record.get("run_id") == run_id):
        fields["status"] = "skipped"
    return VideoOutcome(**fields)


def _still_valid(record: dict, job: VideoJob, cfg: Config) -> bool:
    """Same parameters, same input bytes, and both output tars still there."""
    if record.get("fingerprint") != fingerprint(cfg) or record.get("file") != job.row.file:
        return False
    tars = [cfg.path(cfg.paths.crops) / f"{job.key}.tar",
            cfg.path(cfg.paths.parse) / f"{job.key}.tar"]
    if not all(tar.exists() for tar in tars):
        return False
    if job.row.sha256:
        return record["sha256"] == job.row.sha256
    local = cfg.path(cfg.paths.raw) / job.row.file  # no checksum in the manifest: hash the copy
    return local.exists() and assets.sha256_file(local) == record["sha256"]


def _write_record(cfg: Config, outcome: VideoOutcome, run_id: str) -> None:
    record = {**asdict(outcome), "fingerprint": fingerprint(cfg), "run_id": run_id}
    with atomic_path(_record_path(cfg, outcome.key)) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# Attempts: a line per start of a row (flow run, Ray node, pid), appended before any work, so
# a start whose worker or node died leaves its trace for the attempt that finishes the row.


def _attempts_path(cfg: Config, key: str) -> Path:
    return cfg.path(cfg.flow.root) / ATTEMPTS_DIR / f"{key}.log"


def _log_attempt(cfg: Config, key: str, run_id: str) -> None:
    path = _attempts_path(cfg, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(f"{run_id or '-'} {_node_id()} {os.getpid()}\n")


def _attempts(cfg: Config, key: str, run_id: str) -> list[str]:
    """The nodes of this run's starts of the row, in order."""
    lines = (line.split() for line in _attempts_path(cfg, key).read_text().splitlines())
    return [node for run, node, _ in lines if run == (run_id or "-")]


def _node_id() -> str:
    """The Ray node running this (its hex id), or "local" outside Ray."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


# ---------------------------------------------------------------------------------------------
# Per-process models: a Ray worker process runs many rows, so build the detector and parser once.

_TOOLS: dict[tuple[str, Path], tuple[FaceBackend, FaceParser]] = {}


def _tools(cfg: Config) -> tuple[FaceBackend, FaceParser]:
    weights = cfg.path(cfg.paths.weights)
    key = (fingerprint(cfg), weights)
    if key not in _TOOLS:
        _TOOLS[key] = (make_face_backend(cfg, weights), make_parser(cfg, weights))
    return _TOOLS[key]


# ---------------------------------------------------------------------------------------------
# Reporting


def tally(outcomes: list[VideoOutcome]) -> dict[str, int]:
    counts = {"done": 0, "skipped": 0, "rejected": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return counts


def summary_markdown(outcomes: list[VideoOutcome], metrics: dict, limit: int = 50) -> str:
    """The flow's artifact: counts, samples per split, and the rows that produced nothing."""
    counts = tally(outcomes)
    lines = ["## Preprocessing", "", "| rows | done | skipped (up to date) | rejected |",
             "|---:|---:|---:|---:|",
             f"| {len(outcomes)} | {counts['done']} | {counts['skipped']} | {counts['rejected']} |",
             "", "| split | samples | identities |", "|---|---:|---:|"]
    for split, samples in metrics["samples"].items():
        lines.append(f"| {split} | {samples} | {metrics['identities'][split]} |")
    rejected = [o for o in outcomes if o.status == "rejected"]
    if rejected:
        lines += ["", "### Rejected rows", "", "| file | reason |", "|---|---|"]
        for outcome in rejected[:limit]:
            reason = "; ".join(r.reason for r in outcome.rejects if r.frame == -1) or "no sample"
            lines.append(f"| {outcome.file} | {reason.replace('|', '/')} |")
        if len(rejected) > limit:
            lines.append(f"| ... | {len(rejected) - limit} more in reports/rejects.csv |")
    return "\n".join(lines) + "\n"
