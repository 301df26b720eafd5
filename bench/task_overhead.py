"""Per-task overhead of the `preprocess` flow (Prefect task runs on Ray), and what batching
rows into tasks (``flow.rows_per_task``) saves.

    python bench/task_overhead.py [--rows 2000] [--rows-per-task 1 20 100] [--fresh]

The manifest repeats one sample photo under ``--rows`` distinct identities (``p00000/<photo>``,
``p00001/<photo>``, ..., links to it in a temporary mirror), so every row is its own file and
output key. A first pass (batched, the largest ``--rows-per-task``) processes every row for
real (crop + parse of a 256x256 photo). Then, for each rows-per-task setting, the flow reruns
over the same root, where every row is up to date: a row then costs only the check of its
completion record (read the JSON, hash the parameters, stat the two tars), measured alone, in
one process without Prefect or Ray, as "check ms/row". What the flow adds to that is the cost
of its Prefect task runs and Ray tasks. ``--fresh`` also times a fresh pass (real crop and
parse) per setting. The Prefect server is Prefect's temporary one on a SQLite database in a
temporary PREFECT_HOME; its size after each pass is printed too.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = "images/st_woman_B_happy1.png"


def _manifest(rows: int, tmp: Path, mirrors: list[Path]) -> Path:
    """``rows`` rows of the same sample photo as distinct files of distinct identities, which
    a mirror of links in ``tmp`` serves."""
    with open(ROOT / "data" / "manifests" / "sample.csv", newline="") as fh:
        photo = next(row for row in csv.DictReader(fh) if row["file"] == PHOTO)
    source = next(mirror / PHOTO for mirror in mirrors if (mirror / PHOTO).exists())
    dest = tmp / "manifest.csv"
    with open(dest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(photo))
        writer.writeheader()
        for i in range(rows):
            file = f"p{i:05d}/{Path(PHOTO).name}"
            (tmp / "mirror" / file).parent.mkdir(parents=True)
            (tmp / "mirror" / file).symlink_to(source)
            writer.writerow({**photo, "file": file, "identity": f"p{i:05d}"})
    return dest


def _check_ms_per_row(manifest: Path, overrides: dict) -> float:
    """The up-to-date path alone: process_video on every row, in this process."""
    from heser.config import DEFAULT_PARAMS, load_config
    from heser.preprocess.resumable import flow_config, plan, process_video

    cfg = flow_config(load_config(DEFAULT_PARAMS, overrides))
    jobs, _ = plan(cfg, manifest)
    start = time.perf_counter()
    statuses = {process_video(job, cfg).status for job in jobs}
    assert statuses == {"skipped"}, statuses
    return 1000 * (time.perf_counter() - start) / len(jobs)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--rows", type=int, default=2000)
    args.add_argument("--rows-per-task", type=int, nargs="+", default=[1, 20, 100])
    args.add_argument("--fresh", action="store_true",
                      help="also time a fresh pass (real crop and parse) per setting")
    opts = args.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="heser-overhead-"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect")  # before Prefect reads its settings
    # A new database is migrated first: more than the default 20 s on a busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

    from heser import assets
    from heser.config import DEFAULT_PARAMS, load_config
    from heser.env import configure_tool_state
    from pipelines.preprocess import api_server, preprocess

    configure_tool_state()
    cfg = load_config(DEFAULT_PARAMS)
    mirrors = assets.mirror_dirs(cfg.assets.mirrors, cfg.root)
    manifest = _manifest(opts.rows, tmp, mirrors)
    common = {"assets.mirrors": [str(tmp / "mirror"), *map(str, mirrors)]}
    database = tmp / "prefect" / "prefect.db"
    results = []

    def run(root: Path, rows_per_task: int, kind: str) -> dict:
        start = time.perf_counter()
        result = preprocess(str(manifest), overrides={
            **common, "flow.root": str(root), "flow.rows_per_task": rows_per_task})
        total = time.perf_counter() - start
        counts = (result["done"], result["skipped"], result["rejected"])
        tasks = result["tasks"]
        results.append((kind, rows_per_task, tasks, result["process_seconds"], counts,
                        database.stat().st_size / 2**20, total - result["process_seconds"]))
        print(results[-1], flush=True)
        return result

    with api_server():
        first = tmp / "flow"
        samples = run(first, max(opts.rows_per_task), "fresh")["metrics"]["total_samples"]
        for rows_per_task in opts.rows_per_task:
            run(first, rows_per_task, "up to date")
        if opts.fresh:
            for rows_per_task in opts.rows_per_task[:-1]:
                run(tmp / f"fresh{rows_per_task}", rows_per_task, "fresh")
    check_ms = _check_ms_per_row(manifest, {**common, "flow.root": str(first)})
    sizes = {name: sum(f.stat().st_size for f in (first / name).rglob("*.tar")) / samples
             for name in ("crops", "parse", "shards")}

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{opts.rows} rows of {PHOTO}; local Ray, ray.num_cpus = all cores")
    print(f"up-to-date check alone, one process: {check_ms:.2f} ms/row")
    print("bytes per sample: " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in sizes.items()))
    print("| pass | rows/task | tasks | seconds | rows/s | wall ms/task | done/skipped/rejected "
          "| Prefect DB MiB | plan + finish s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for kind, rows_per_task, tasks, seconds, counts, db_mib, rest in results:
        print(f"| {kind} | {rows_per_task} | {tasks} | {seconds:.1f} | "
              f"{opts.rows / seconds:.1f} | {1000 * seconds / tasks:.1f} | "
              f"{'/'.join(map(str, counts))} | {db_mib:.1f} | {rest:.1f} |")


if __name__ == "__main__":
    main()
