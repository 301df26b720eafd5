"""Throughput of the `preprocess` flow with 1, 2, ... Ray workers, and the scaling efficiency.

    python bench/preprocess_scaling.py [--workers 1 2] [--rows 24] [--nodes] [--set KEY=VALUE]

Each setting runs the whole flow on the first ``--rows`` rows of the sample manifest into a
fresh directory (nothing skipped), on a local Ray with ``ray.num_cpus`` = workers (one row per
worker at a time), or with ``--nodes`` on a multi-node cluster on this machine
(heser.cluster.LocalCluster: as many nodes as workers, one CPU each, separate raylets).
The figure is the per-row phase: from the first task submitted to the last one finished, so Ray
and Prefect start-up are left out but each worker's model loading is in.
Efficiency at n workers = speed(n) / (n x speed(1)).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from contextlib import nullcontext
from pathlib import Path

from heser.cluster import LocalCluster
from heser.config import load_config, parse_override
from heser.env import configure_tool_state
from pipelines.preprocess import api_server, preprocess

ROOT = Path(__file__).resolve().parents[1]


def _manifest(rows: int, dest: Path) -> Path:
    lines = (ROOT / "data" / "manifests" / "sample.csv").read_text().splitlines()
    dest.write_text("\n".join(lines[: rows + 1]) + "\n")
    return dest


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args.add_argument("--rows", type=int, default=24)
    args.add_argument("--nodes", action="store_true",
                      help="one single-CPU Ray node per worker instead of one local Ray")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a parameter, e.g. --set flow.rows_per_task=4")
    opts = args.parse_args()
    configure_tool_state()
    overrides = dict(parse_override(s) for s in opts.set)
    cfg = load_config(ROOT / "params.yaml", overrides)
    results = []
    with tempfile.TemporaryDirectory(prefix="heser-scaling-") as tmp, api_server():
        manifest = _manifest(opts.rows, Path(tmp) / "manifest.csv")
        for workers in opts.workers:
            cluster = LocalCluster(size=workers, num_cpus=1) if opts.nodes else nullcontext()
            with cluster:
                where = ({"ray.address": cluster.address} if opts.nodes
                         else {"ray.num_cpus": workers})
                result = preprocess(str(manifest), overrides={
                    **overrides, "flow.root": str(Path(tmp) / f"w{workers}"), **where})
            samples = sum(result["metrics"]["samples"].values())
            seconds = result["process_seconds"]
            results.append((workers, result["rows"], samples, seconds))
    base = results[0][1] / results[0][3] / results[0][0]
    print(f"\n{platform.processor() or platform.machine()}, crop {cfg.crop.size}px, "
          f"video stride {cfg.crop.video.stride}, max {cfg.crop.video.max_frames} frames, "
          f"{cfg.flow.rows_per_task} rows per task, "
          + ("one single-CPU Ray node per worker" if opts.nodes else "one local Ray"))
    print("| Ray workers | rows | samples | seconds | rows/s | samples/s | efficiency |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for workers, rows, samples, seconds in results:
        speed = rows / seconds
        print(f"| {workers} | {rows} | {samples} | {seconds:.1f} | {speed:.2f} | "
              f"{samples / seconds:.1f} | {speed / (workers * base):.2f} |")


if __name__ == "__main__":
    main()
