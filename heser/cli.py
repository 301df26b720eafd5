"""The `heser` command.

    heser config [--set KEY=VALUE ...]          print the validated parameters
    heser fetch MANIFEST --dest DIR             download a manifest (mirror first, sha256 checked)
    heser contact-sheet SHARD_DIR OUT.png       redraw the contact sheet of a shard directory
    heser finetune --source A.jpg B.jpg|A.mp4 ... --out subject.pt   subject-specific tuning
    heser swap --source A.jpg|A.mp4 [...] --target T.jpg|T.mp4 --out OUT.png|OUT.mp4

The pipeline itself runs through DVC (`dvc repro`); swap uses the models it trains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from heser import __version__, assets
from heser.config import (
    add_overrides_argument,
    add_params_argument,
    config_from_args,
    exit_on_error,
)
from heser.env import configure_tool_state
from heser.face.types import FaceBackendError
from heser.train.models import ALIGNER


def _config(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    tree = cfg.model_dump(mode="json", exclude={"root", "profiles"})
    print(yaml.safe_dump(tree, sort_keys=False), end="")


def _fetch(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    rows, bad = assets.read_manifest(Path(args.manifest))
    mirrors = assets.mirror_dirs(cfg.assets.mirrors, cfg.root)
    fetched, failed = assets.fetch_all(rows, Path(args.dest), mirrors,
                                       retries=cfg.assets.retries, timeout_s=cfg.assets.timeout_s)
    for reject in bad + failed:
        print(f"skipped {reject.file}: {reject.reason}", file=sys.stderr)
    print(f"fetched {len(fetched)} of {len(rows) + len(bad)} rows into {args.dest}")
    if failed:
        raise SystemExit(1)


def _contact_sheet(args: argparse.Namespace) -> None:
    from heser.preprocess.contact_sheet import save_contact_sheet

    save_contact_sheet(Path(args.shard_dir), Path(args.out))
    print(f"wrote {args.out}")


def _finetune(args: argparse.Namespace) -> None:
    from heser.face.backends import make_face_backend
    from heser.face.cropper import Cropper
    from heser.swap_media import source_crops
    from heser.train.finetune import finetune

    cfg = config_from_args(args)
    steps = args.steps or cfg.aligner.finetune_steps
    checkpoint = Path(args.checkpoint) if args.checkpoint else ALIGNER.checkpoint(cfg)
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no trained aligner; run `dvc repro train_aligner`")
    sources = [Path(s) for s in args.source]
    notes: list[str] = []
    cropper = Cropper(make_face_backend(cfg, cfg.path(cfg.paths.weights)), cfg.crop)
    crops = source_crops(cfg, cropper, sources, notes)
    print("\n".join(notes), end="\n" if notes else "")
    finetune(cfg, crops, [p.name for p in sources], checkpoint, steps, Path(args.out))
    print(f"fine-tuned {steps} steps on {len(crops)} crops of {len(sources)} sources "
          f"-> {args.out}")


def _swap(args: argparse.Namespace) -> None:
    from heser.swap_media import run_swap

    cfg = config_from_args(args)
    report = run_swap(cfg, [Path(s) for s in args.source], Path(args.target), Path(args.out),
                      target_face=args.target_face, finetune_steps=args.finetune_steps,
                      aligner=Path(args.aligner) if args.aligner else None,
                      blender=Path(args.blender) if args.blender else None)
    print(report.summary())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heser", description="HeSer head swapping pipeline")
    parser.add_argument("--version", action="version", version=f"heser {__version__}")
    add_params_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="print the validated parameters")
    add_overrides_argument(config)
    config.set_defaults(run=_config)
    fetch = sub.add_parser("fetch", help="download the files of a manifest")
    fetch.add_argument("manifest")
    fetch.add_argument("--dest", required=True)
    add_overrides_argument(fetch, "assets.retries=5")
    fetch.set_defaults(run=_fetch)
    sheet = sub.add_parser("contact-sheet", help="draw the contact sheet of a shard directory")
    sheet.add_argument("shard_dir")
    sheet.add_argument("out")
    sheet.set_defaults(run=_contact_sheet)
    tune = sub.add_parser("finetune", help="fine-tune the aligner on photos of one person")
    tune.add_argument("--source", nargs="+", required=True,
                      help="photos or videos of the person (at least 2 crops in all; a video "
                           "gives swap.source_frames frames spread over head pose)")
    tune.add_argument("--out", required=True, help="where to write the fine-tuned checkpoint")
    tune.add_argument("--steps", type=int, default=0, help="default: aligner.finetune_steps")
    tune.add_argument("--checkpoint", help="trained aligner (default: paths.models/aligner.pt)")
    add_overrides_argument(tune, "aligner.k=4")
    tune.set_defaults(run=_finetune)
    swap = sub.add_parser("swap", help="put the source's head onto a target picture or video")
    swap.add_argument("--source", nargs="+", required=True,
                      help="photos or videos of the person (K >= 1; a video gives "
                           "swap.source_frames frames spread over head pose)")
    swap.add_argument("--target", required=True, help="picture or video to put the head on")
    swap.add_argument("--out", required=True, help=".png/.jpg for a picture, .mp4 for a video")
    swap.add_argument("--target-face", type=int, help="which target face, 1 = leftmost "
                      "(needed when the target has several and swap.several_faces is error)")
    swap.add_argument("--finetune-steps", type=int, default=0, help="fine-tune the aligner on "
                      "the sources for N steps first (cached under swap.finetune_cache)")
    swap.add_argument("--aligner", help="aligner checkpoint (default: paths.models/aligner.pt)")
    swap.add_argument("--blender", help="blender checkpoint (default: paths.models/blender.pt)")
    add_overrides_argument(swap, "swap.several_faces=largest")
    swap.set_defaults(run=_swap)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_tool_state()
    with exit_on_error(f"heser {args.command}", assets.AssetError, FaceBackendError, ValueError):
        args.run(args)


if __name__ == "__main__":
    main()
