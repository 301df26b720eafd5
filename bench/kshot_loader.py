"""K-shot loader throughput against what a training step consumes (issue 14: the loader alone
must deliver at least 10x the episodes/s of a training step, at 128 and at 512 px).

    python bench/kshot_loader.py                        # cpu and paper profiles, workers 0 1 2
    python bench/kshot_loader.py --profiles cpu --workers 0 2 --json out.json
    python bench/kshot_loader.py --step aligner:paper=12.5   # a step figure given, not measured
    python bench/kshot_loader.py --dry-run              # tiny: a few seconds of loading on CPU

The loader is ``KShotEpisodes`` + a torch ``DataLoader`` built as heser/train/stage.py builds
it: the model's K (aligner.k; 1 for the blender), its batch size, episodes per video and seed,
one fresh DataLoader per pass over the split (``set_epoch`` each time). A figure is whole passes:
worker start, the tar read and the wait for the first batch included, as training sees them.
The loader yields crops at the shard's crop size; the resize to aligner.size / blender.size
happens in the task's ``prepare`` on the training device, so it is part of the step.

The cpu profile reads the real shards (paths.shards, 256 px crops; it trains at 128). The paper
profile's 512 px shards are made from them by upscaling every crop (bicubic) and label map
(nearest) and writing them with the shard stage's writers (same format, same index): upscaled
crops are smoother than real 512 px crops, so their PNGs are smaller and may decode a little
faster than real ones.

Step consumption is batch_size / step time from bench/train_step.py (measured in a subprocess
on this machine's device, unless ``--step MODEL:PROFILE=EPISODES_PER_S`` gives it: on a CPU a
paper-profile step takes minutes, so give it there). --dry-run measures no step.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader

from heser.config import load_config
from heser.data.kshot import KShotEpisodes
from heser.data.shards import INDEX_NAME, read_index, read_tar, write_index, write_split
from heser.io import decode_npy, decode_png, npy_bytes, png_bytes
from heser.train.models import MODELS

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_RATIO = 10.0  # issue 14: loader episodes/s >= 10 x a step's


@dataclass(frozen=True)
class Case:
    """One model at one profile, with the loader settings its training stage uses."""

    model: str  # aligner | blender
    profile: str  # cpu | paper
    crop: int  # side of the crops the loader decodes (crop.size)
    size: int  # side the model trains at (aligner.size / blender.size), resized in the step
    k: int  # sources per episode
    batch_size: int
    episodes_per_video: int
    workers: int  # DataLoader workers the config uses
    seed: int


def case_for(model: str, profile: str) -> Case:
    cfg = load_config(ROOT / "params.yaml", {"profile": profile})
    trainable = MODELS[model]
    train = trainable.train(cfg)
    return Case(model, profile, cfg.crop.size, getattr(cfg, model).size, trainable.episode_k(cfg),
                train.batch_size, train.episodes_per_video, train.workers, train.seed)


def _resized_sample(sample: dict[str, bytes], size: int) -> dict[str, bytes]:
    """One shard sample with its crop (bicubic) and label map (nearest) resized to ``size``."""
    image = decode_png(sample["img.png"])
    scale = size / image.shape[0]
    out = dict(sample)
    out["img.png"] = png_bytes(cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC),
                               source_type="algorithmicallyEnhanced")
    out["parse.png"] = png_bytes(cv2.resize(decode_png(sample["parse.png"]), (size, size),
                                            interpolation=cv2.INTER_NEAREST))
    if "lmk.npy" in sample:
        out["lmk.npy"] = npy_bytes(decode_npy(sample["lmk.npy"]) * scale)
    return out


def resized_shards(source: Path, target: Path, split: str, size: int, max_per_shard: int,
                   max_videos: int | None = None) -> Path:
    """``split`` of the shards in ``source`` with every crop resized to ``size``, written to
    ``target`` by the shard stage's writers with its index (``max_videos``: the first ones)."""
    index = read_index(source / INDEX_NAME)
    rows = index.filter(pc.equal(index["split"], split)).to_pylist()
    if not rows:
        raise ValueError(f"{source / INDEX_NAME} has no sample of split {split!r}")
    if max_videos is not None:
        kept = list(dict.fromkeys((r["identity"], r["video"]) for r in rows))[:max_videos]
        rows = [r for r in rows if (r["identity"], r["video"]) in set(kept)]
    keys = {r["key"] for r in rows}
    target.mkdir(parents=True, exist_ok=True)

    def samples() -> Iterator[dict[str, bytes]]:
        for shard in dict.fromkeys(r["shard"] for r in rows):
            for sample in read_tar(source / shard):
                if sample["__key__"] in keys:
                    yield _resized_sample(sample, size)

    shard_of = dict(write_split(samples(), target, split, max_per_shard))
    write_index([{**r, "shard": shard_of[r["key"]]} for r in rows], target / INDEX_NAME)
    return target


def _warm_page_cache(shard_dir: Path) -> None:
    for tar in sorted(shard_dir.glob("*.tar")):
        with open(tar, "rb") as fh:
            while fh.read(1 << 24):
                pass


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the joined DataLoader workers)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def loader_rate(shard_dir: Path, split: str, case: Case, workers: int,
                min_seconds: float) -> dict[str, float]:
    """Episodes/s of whole passes over ``split`` (at least one, until ``min_seconds``), each
    through a fresh DataLoader as the training stage builds one per epoch; and the CPU time per
    episode of this process and its workers together (steadier than the wall clock on a shared
    machine, and the basis of the projection to more workers)."""
    dataset = KShotEpisodes(shard_dir, split, case.k, case.episodes_per_video, case.seed,
                            rank=0, world_size=1)
    episodes, passes, first_batch = 0, 0, []
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    while passes == 0 or time.perf_counter() - start < min_seconds:
        dataset.set_epoch(passes)
        opened = time.perf_counter()
        for i, batch in enumerate(DataLoader(dataset, batch_size=case.batch_size,
                                             num_workers=workers)):
            if i == 0:
                first_batch.append(time.perf_counter() - opened)
            episodes += len(batch["target_key"])
        passes += 1
    seconds, cpu_seconds = time.perf_counter() - start, _cpu_seconds() - cpu_start
    return {"episodes": episodes, "passes": passes, "seconds": round(seconds, 3),
            "episodes_per_s": round(episodes / seconds, 2),
            "cpu_ms_per_episode": round(1000 * cpu_seconds / episodes, 2),
            "first_batch_s": round(float(np.mean(first_batch)), 3)}


def measure_step(case: Case, warmup: int, steps: int,
                 extra: Sequence[str] = ()) -> dict[str, object]:
    """batch_size / step time of ``case``'s model, from bench/train_step.py run as a subprocess
    (``extra``: more of its options)."""
    with tempfile.TemporaryDirectory(prefix="train_step_") as tmp:
        out = Path(tmp) / "step.json"
        command = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--model", case.model,
                   "--warmup", str(warmup), "--steps", str(steps),
                   "--set", f"profile={case.profile}", *extra, "--json", str(out)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(command[1:])} failed (exit {done.returncode}):\n"
                               f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
        figures = json.loads(out.read_text())
    return {"episodes_per_s": figures["episodes_per_s"], "step_ms": figures["step_ms"],
            "device": figures["device"],
            "source": " ".join(["bench/train_step.py", *command[2:-2]])}


def parse_step_option(text: str) -> tuple[tuple[str, str], float]:
    """``aligner:paper=12.5`` -> (("aligner", "paper"), 12.5)."""
    match = re.fullmatch(r"(aligner|blender):(cpu|paper)=([\d.]+(?:e-?\d+)?)", text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"--step {text!r}: expected MODEL:PROFILE=EPISODES_PER_S, e.g. aligner:paper=12.5")
    return (match.group(1), match.group(2)), float(match.group(3))


def workers_needed(step_episodes_per_s: float, cpu_ms_per_episode: float) -> int:
    """DataLoader workers (one core each) for REQUIRED_RATIO x a step's episodes/s, if each
    worker delivers 1000 / ``cpu_ms_per_episode`` episodes/s and workers scale linearly."""
    return math.ceil(REQUIRED_RATIO * step_episodes_per_s * cpu_ms_per_episode / 1000)


def _table(rows: Sequence[dict[str, object]]) -> str:
    lines = ["| model | profile | crop -> size | K | batch | workers | loader episodes/s "
             "| CPU ms/episode | first batch | step episodes/s | loader / step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        step = r["step_episodes_per_s"]
        ratio = r["ratio"]
        lines.append(
            f"| {r['model']} | {r['profile']} | {r['crop']} -> {r['size']} | {r['k']} "
            f"| {r['batch_size']} | {r['workers']}{' (config)' if r['config_workers'] else ''} "
            f"| {r['episodes_per_s']:.1f} | {r['cpu_ms_per_episode']:.0f} "
            f"| {r['first_batch_s']:.2f} s "
            f"| {'-' if step is None else f'{step:.3g}'} "
            f"| {'-' if ratio is None else f'{ratio:.1f}x'} |")
    return "\n".join(lines)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--profiles", nargs="+", choices=["cpu", "paper"], default=["cpu", "paper"])
    args.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["aligner", "blender"])
    args.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    args.add_argument("--seconds", type=float, default=10.0,
                      help="time each loader for whole passes until this many seconds")
    args.add_argument("--shards", type=Path, default=None, help="default: paths.shards")
    args.add_argument("--split", default="train")
    args.add_argument("--resized-dir", type=Path, default=None,
                      help="keep the resized shards under this folder (reused when there)")
    args.add_argument("--step", type=parse_step_option, action="append", default=[],
                      metavar="MODEL:PROFILE=EPISODES_PER_S", help="a step figure, not measured")
    args.add_argument("--no-step", action="store_true", help="measure the loader only")
    args.add_argument("--step-warmup", type=int, default=1)
    args.add_argument("--step-steps", type=int, default=3)
    args.add_argument("--json", type=Path, default=None, help="write the figures here")
    args.add_argument("--dry-run", action="store_true",
                      help="tiny: 3 videos at 32/64 px crops, workers 0 1, one pass, no step")
    opts = args.parse_args()
    cfg = load_config(ROOT / "params.yaml")
    source = opts.shards or cfg.path(cfg.paths.shards)
    if not (source / INDEX_NAME).exists():
        sys.exit(f"{source / INDEX_NAME} not found: build the shards first (dvc repro shard)")
    given = dict(opts.step)
    if opts.dry_run:
        opts.workers, opts.seconds, opts.no_step = [0, 1], 0.0, True

    rows = []
    with tempfile.TemporaryDirectory(prefix="kshot_loader_") as tmp:
        for profile in opts.profiles:
            cases = [case_for(model, profile) for model in opts.models]
            crop = cases[0].crop // 8 if opts.dry_run else cases[0].crop
            shard_dir = source
            if opts.dry_run or profile != "cpu":
                shard_dir = (opts.resized_dir or Path(tmp)) / f"{opts.split}_crop{crop}"
                if not (shard_dir / INDEX_NAME).exists():
                    max_per_shard = load_config(ROOT / "params.yaml", {"profile": profile}
                                                ).shard.max_samples_per_shard
                    resized_shards(source, shard_dir, opts.split, crop, max_per_shard,
                                   3 if opts.dry_run else None)
            _warm_page_cache(shard_dir)
            for case in cases:
                case = Case(**{**asdict(case), "crop": crop})
                step = None
                if (case.model, profile) in given:
                    step = {"episodes_per_s": given[(case.model, profile)], "source": "--step"}
                elif not opts.no_step:
                    step = measure_step(case, opts.step_warmup, opts.step_steps)
                for workers in opts.workers:
                    rate = loader_rate(shard_dir, opts.split, case, workers, opts.seconds)
                    step_rate = None if step is None else step["episodes_per_s"]
                    rows.append({**asdict(case), "workers": workers,
                                 "config_workers": workers == case.workers, **rate,
                                 "step_episodes_per_s": step_rate, "step": step,
                                 "ratio": None if step_rate is None
                                 else round(rate["episodes_per_s"] / step_rate, 2)})
                    print(_table(rows[-1:]).splitlines()[-1], flush=True)
                    if opts.json:
                        _write_json(opts.json, rows, opts.dry_run)

    print(f"\nK-shot loader vs training step, {torch.get_num_threads()} threads, "
          f"{'dry run' if opts.dry_run else 'shards ' + str(source)}; requirement: loader "
          f">= {REQUIRED_RATIO:.0f}x step")
    print(_table(rows))
    for r in rows:
        if r["config_workers"] and r["ratio"] is not None:
            verdict = "meets" if r["ratio"] >= REQUIRED_RATIO else "MISSES"
            print(f"{r['model']} {r['profile']} ({r['crop']} px crops, {r['workers']} workers as "
                  f"configured): {r['ratio']:.1f}x, {verdict} the >= {REQUIRED_RATIO:.0f}x "
                  "requirement")
    for line in _projection(rows)["lines"]:
        print(line)


def _write_json(path: Path, rows: list[dict[str, object]], dry_run: bool) -> None:
    """The figures so far (written after each loader, so a run cut short keeps them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "required_ratio": REQUIRED_RATIO, "dry_run": dry_run,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(), "rows": rows,
        "projection": _projection(rows)["workers_needed"]}, indent=2) + "\n")


def _projection(rows: Sequence[dict[str, object]]) -> dict[str, object]:
    """PROJECTION, not a measurement: workers needed to feed a faster (GPU) step at 10x, from
    the CPU time per episode measured here with one worker, assuming one core per worker and
    linear scaling (a GPU host's cores may be faster or slower than this machine's)."""
    lines, needed = ["", "PROJECTION (not measured): DataLoader workers for >= "
                         f"{REQUIRED_RATIO:.0f}x a step of X episodes/s, at the CPU time per "
                         "episode measured above with 1 worker, one core per worker"], []
    for r in rows:
        if r["workers"] != 1:
            continue
        cpu_ms = r["cpu_ms_per_episode"]
        counts = {x: workers_needed(x, cpu_ms) for x in (1, 5, 10, 25, 50)}
        needed.append({"model": r["model"], "profile": r["profile"], "crop": r["crop"],
                       "cpu_ms_per_episode": cpu_ms, "step_episodes_per_s_to_workers": counts})
        lines.append(f"  {r['model']} {r['profile']} ({r['crop']} px, {cpu_ms:.0f} CPU ms per "
                     "episode): " + ", ".join(f"X={x}: {n}" for x, n in counts.items()))
    return {"lines": lines, "workers_needed": needed}


if __name__ == "__main__":
    main()
