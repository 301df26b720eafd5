"""The aligner's learnability check (heser.train.learnability): train on a few identities of
the sample, then measure whether I_A keeps the sources' identity and follows the driver.

    python bench/learnability.py                                   # 4 identities, 200 steps
    python bench/learnability.py --set aligner.loss.cross_identity=0 --name paper_recipe
    python bench/learnability.py --identities all --set aligner.size=256 --minutes 5   # a GPU
    python bench/learnability.py --dry-run                         # tiny, seconds, CPU

Writes <out>/learnability.json (the figures, the overrides, the steps and seconds),
<out>/aligner.pt (the trained checkpoint, ~100 MB at the default sizes, for --resume),
<out>/grid.png (header: the drivers; rows: a source, then I_A per driver), <out>/roll.png
(the roll test; rows: a person's held-out driver turned -8 and +8 degrees, then I_A of each),
<out>/mouth.png (the mouth test; rows: the person's held-out frames with the most closed and the
most open mouth, then I_A of each)
and the training reports under <out>/train/, and logs all of it as one run of the MLflow experiment
``heser-learnability``. The data is the DVC pipeline's shards (data/shards): run
`dvc repro shard` first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from heser.config import (
    Config,
    add_config_arguments,
    exit_on_error,
    load_config,
    overrides_from_args,
    with_overrides,
)
from heser.data.shards import INDEX_NAME, read_index
from heser.env import configure_tool_state
from heser.face.backends import make_face_backend
from heser.io import atomic_path, fresh_dir, save_png
from heser.metrics import LPIPS_WEIGHTS
from heser.nets.faceres import load_faceres
from heser.tracking import Tracker, run_name
from heser.train.aligner import AlignerTask
from heser.train.checkpoint import load_checkpoint
from heser.train.learnability import (
    DEFAULT_IDENTITIES,
    ROLL_DEG,
    Landmarks,
    load_people,
    measure,
    subset_shards,
)
from heser.train.stage import StageOptions, landmark_motion, train_stage

EXPERIMENT = "heser-learnability"
# About 6 CPU-seconds a step at these sizes (docs/BENCHMARKS.md); --set overrides.
CPU_SETTINGS = {"aligner.size": 64, "aligner.train.batch_size": 8,
                "aligner.train.steps": 200, "aligner.train.eval_episodes": 8,
                "aligner.train.episodes_per_video": 48, "aligner.train.workers": 1,
                "aligner.train.log_every": 25}
DRY_RUN = {"aligner.size": 32, "aligner.k": 2, "aligner.train.batch_size": 4,
           "aligner.train.steps": 2, "aligner.train.workers": 0, "aligner.train.eval_episodes": 2,
           "aligner.portrait.width": 8, "aligner.portrait.dim": 32, "aligner.pose.dim": 16,
           "aligner.expression.dim": 16, "aligner.mlp_hidden": 32,
           "aligner.generator.base_channels": 8, "aligner.generator.max_channels": 16,
           "aligner.discriminator.base_channels": 8, "aligner.discriminator.max_channels": 16}


def _identities(cfg: Config, wanted: str) -> tuple[str, ...]:
    if wanted != "all":
        return tuple(wanted.split(","))
    index = read_index(cfg.path(cfg.paths.shards) / INDEX_NAME).to_pylist()
    frames: dict[str, int] = {}
    for row in index:
        if row["split"] == "train":
            frames[row["identity"]] = frames.get(row["identity"], 0) + 1
    return tuple(sorted(i for i, n in frames.items() if n > cfg.aligner.k + 1))


def _calibrated_steps(cfg: Config, minutes: float) -> int:
    """Steps that fit ``minutes``: three steps timed on the check's own data (after one warm-up
    step), the rest of the budget divided by their mean."""
    from torch.utils.data import DataLoader

    from heser.data.kshot import KShotEpisodes
    from heser.train.distributed import init_distributed
    from heser.train.gan import GanTrainer

    dist = init_distributed()
    task = AlignerTask(cfg, dist.device)
    trainer = GanTrainer(task, cfg.aligner.train, dist)
    data = KShotEpisodes(cfg.path(cfg.paths.shards), "train", cfg.aligner.k, 4, 0,
                         landmarks=landmark_motion(cfg))
    batch = next(iter(DataLoader(data, batch_size=cfg.aligner.train.batch_size)))
    trainer.train_step(batch)
    if dist.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(3):
        trainer.train_step(batch)
    if dist.device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - start) / 3
    return max(1, int(minutes * 60 / per_step))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--identities", default=",".join(DEFAULT_IDENTITIES),
                        help="comma-separated train-split identities, or 'all'")
    parser.add_argument("--holdout", type=float, default=0.25,
                        help="share of each video's last frames held out (drivers)")
    parser.add_argument("--drivers", type=int, default=3, help="held-out drivers per person")
    parser.add_argument("--minutes", type=float, default=None,
                        help="train for about this long (steps calibrated on 3 timed steps)")
    parser.add_argument("--name", default="default", help="the run's name; <out> defaults to "
                        "reports/learnability/<name>")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, 2 steps, CPU")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted check from <out>/aligner.pt (same settings)")
    parser.add_argument("--measure", type=Path, default=None, metavar="CHECKPOINT",
                        help="only measure this checkpoint of an earlier check (same --name, "
                        "--set and --identities); the report goes to <out>/step<N>")
    args = parser.parse_args(argv)
    configure_tool_state()
    with exit_on_error("bench/learnability.py", ValueError):
        run(args)


def run(args: argparse.Namespace) -> None:
    settings = dict(DRY_RUN if args.dry_run else CPU_SETTINGS)
    overrides = {**settings, **overrides_from_args(args)}
    cfg = base = load_config(args.params, overrides)
    out = args.out or cfg.path(cfg.paths.reports) / "learnability" / args.name
    identities = _identities(base, args.identities)
    subset = out / "subset"
    if args.measure:  # an earlier (or still running) check's checkpoint, its data as it was
        _measure(cfg, args, identities, overrides, out, args.measure)
        return
    checkpoint = out / "aligner.pt"
    if not (args.resume and checkpoint.exists()):
        fresh_dir(out)
    counts = subset_shards(cfg.path(cfg.paths.shards), identities, args.holdout, subset)
    cfg = with_overrides(cfg, {"paths.shards": str(subset)}, "bench/learnability.py")
    if args.minutes:
        cfg = with_overrides(cfg, {"aligner.train.steps": _calibrated_steps(cfg, args.minutes)},
                             "bench/learnability.py --minutes")
    print(f"learnability: {len(identities)} identities, {counts['train']} training and "
          f"{counts['val']} held-out frames, {cfg.aligner.train.steps} steps at "
          f"{cfg.aligner.size} px", flush=True)

    start = time.perf_counter()
    train_stage(cfg, AlignerTask, StageOptions(checkpoint=checkpoint, reports=out / "train",
                                                track=False))
    seconds = time.perf_counter() - start
    _measure(cfg, args, identities, overrides, out, checkpoint, seconds)


def _measure(cfg: Config, args: argparse.Namespace, identities: tuple[str, ...],
             overrides: dict, out: Path, checkpoint: Path, seconds: float | None = None) -> None:
    """Measure ``checkpoint``'s aligner; the report goes to ``out``, or for --measure to
    ``out``/step<N>."""
    subset = out / "subset"
    cfg = with_overrides(cfg, {"paths.shards": str(subset)}, "bench/learnability.py")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = AlignerTask(cfg, device)
    state = load_checkpoint(checkpoint)
    task.generator.load_state_dict(state["generator"])
    if seconds is None:
        out = out / f"step{state['step']}"
        out.mkdir(exist_ok=True)
    weights = cfg.path(cfg.paths.weights)
    people = load_people(subset, identities, cfg.aligner.k, 1 if args.dry_run else args.drivers,
                         2 if args.dry_run else 16)
    landmarks = Landmarks(make_face_backend(cfg, weights), cfg.crop.size)
    figures, pictures = measure(task, people, load_faceres(weights).to(device), landmarks,
                                weights / LPIPS_WEIGHTS)
    report = {"identities": list(identities), "overrides": overrides, "steps": state["step"],
              "train_seconds": None if seconds is None else round(seconds, 1),
              "device": str(device), "figures": figures}
    with atomic_path(out / "learnability.json") as tmp:  # no half-written report
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    for name, picture in pictures.items():
        save_png(out / f"{name}.png", picture)
    _log(cfg, args.name, report, out, list(pictures))
    _print(report)


def _log(cfg: Config, name: str, report: dict, out: Path, pictures: list[str]) -> None:
    tracker = Tracker(EXPERIMENT, run_name("learnability", name),
                      {"identities": ",".join(report["identities"]), "steps": report["steps"],
                       **{k: v for k, v in report["overrides"].items()},
                       "aligner": cfg.aligner.model_dump(mode="json")}, enabled=True)
    tracker.metrics({k: float(v) for k, v in report["figures"].items()}, report["steps"])
    if report["train_seconds"] is not None:
        tracker.metrics({"train_seconds": report["train_seconds"]}, report["steps"])
    for picture in pictures:
        tracker.artifact(out / f"{picture}.png", "samples")
    tracker.artifact(out / "learnability.json", "reports")
    tracker.end()


def _print(report: dict) -> None:
    f = report["figures"]
    print(f"\n{report['steps']} steps ({report['train_seconds']} s) on {report['device']}")
    print(f"cross-identity retrieval top-1: FaceRes {f['faceres_cross_top1']:.2f}, dlib (the "
          f"identity loss's network) {f['eid_cross_top1']:.2f}; chance {f['faceres_chance']:.2f}")
    print(f"  cross pairs retrieving the driver instead: FaceRes "
          f"{f['faceres_cross_driver_share']:.2f}, dlib {f['eid_cross_driver_share']:.2f}")
    print(f"same-person retrieval top-1: FaceRes {f['faceres_same_top1']:.2f}")
    print(f"change of I_A: sources only {f['change_sources_only']:.3f}, driver only "
          f"{f['change_driver_only']:.3f}")
    print(f"pose error to the driver {f['pose_error_to_driver_deg']:.1f} deg, to the sources "
          f"{f['pose_error_to_sources_deg']:.1f} deg; expression error to the driver "
          f"{f['expression_error_to_driver']:.3f}, to the sources "
          f"{f['expression_error_to_sources']:.3f}; the driver itself to the sources: pose "
          f"{f['pose_error_driver_to_sources_deg']:.1f} deg, expression "
          f"{f['expression_error_driver_to_sources']:.3f}; the driver against itself at the "
          f"aligner's size (the floor): pose {f['pose_error_floor_deg']:.1f} deg, expression "
          f"{f['expression_error_floor']:.3f}; mouth-opening correlation with the "
          f"driver {f['mouth_opening_correlation']:.2f} (faces found in {f['face_found']:.0%} "
          "of I_A)")
    print(f"same-video reenactment of held-out frames: L1 {f['same_video_l1']:.3f}, SSIM "
          f"{f['same_video_ssim']:.3f}, LPIPS {f['same_video_lpips']:.3f} (L1 of the sources' "
          f"average frame, ignoring the driver: {f['same_video_l1_source_average']:.3f})")
    print(f"codes: e_por spread over people {f['portrait_code_spread']:.4f} (size "
          f"{f['portrait_code_size']:.3f}); e_pose / e_exp spread over a person's drivers as "
          f"the MLP sees them {f['pose_code_spread_own_drivers']:.3f} / "
          f"{f['expression_code_spread_own_drivers']:.3f}; AdaIN parameters' spread over drivers "
          f"{f['adain_spread_over_drivers']:.4f} (size {f['adain_size']:.3f})")
    print(f"a held-out driver turned {ROLL_DEG:g} deg each way in the image plane: the two I_A "
          f"differ by {f['roll_followed_deg']:.1f} deg, the two drivers by "
          f"{f['roll_given_deg']:.1f} (roll following {f['roll_following']:.2f}; 1 follows)")
    print(f"a person's own held-out frames, mouth most closed and most open: I_A's mouth "
          f"opens by {f['mouth_followed']:.3f}, the drivers' by {f['mouth_given']:.3f} (mouth "
          f"following {f['mouth_following']:.2f}; 1 follows)")
    print(f"the drivers' landmark motion features alone name their person: top-1 "
          f"{f['landmark_person_top1']:.2f} (nearest centroid; chance "
          f"{f['landmark_person_chance']:.2f})")


if __name__ == "__main__":
    main()
