"""The `heser` command.

    heser config [--set KEY=VALUE ...]          print the validated parameters
    heser fetch MANIFEST --dest DIR             download a manifest (mirror first, sha256 checked)
    heser contact-sheet SHARD_DIR OUT.png       redraw the contact sheet of a shard directory
    heser finetune --source A.jpg B.jpg ... --out subject.pt   subject-specific aligner tuning

The pipeline itself runs through DVC (`dvc repro`); later stages add swap and finetune here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from heser import __version__, assets
from heser.config import ConfigError, load_config, parse_override
from heser.env import configure_tool_state


def _config(args: argparse.Namespace) -> None:
    cfg = load_config(args.params, dict(parse_override(s) for s in args.set))
    tree = cfg.model_dump(mode="json", exclude={"root", "profiles"})
    print(yaml.safe_dump(tree, sort_keys=False), end="")


def _fetch(args: argparse.Namespace) -> None:
    cfg = load_config(args.params)
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
    from heser.train.finetune import finetune

    cfg = load_config(args.params, dict(parse_override(s) for s in args.set))
    steps = args.steps or cfg.aligner.finetune_steps
    checkpoint = Path(args.checkpoint) if args.checkpoint else (
        cfg.path(cfg.paths.models) / "aligner.pt")
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no trained aligner; run `dvc repro train_aligner`")
    result = finetune(cfg, [Path(s) for s in args.source], checkpoint, steps, Path(args.out))
    print(f"fine-tuned {steps} steps on {result['sources']} photos -> {args.out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heser", description="HeSer head swapping pipeline")
    parser.add_argument("--version", action="version", version=f"heser {__version__}")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="print the validated parameters")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    config.set_defaults(run=_config)
    fetch = sub.add_parser("fetch", help="download the files of a manifest")
    fetch.add_argument("manifest")
    fetch.add_argument("--dest", required=True)
    fetch.set_defaults(run=_fetch)
    sheet = sub.add_parser("contact-sheet", help="draw the contact sheet of a shard directory")
    sheet.add_argument("shard_dir")
    sheet.add_argument("out")
    sheet.set_defaults(run=_contact_sheet)
    tune = sub.add_parser("finetune", help="fine-tune the aligner on photos of one person")
    tune.add_argument("--source", nargs="+", required=True, help="photos of the person (K >= 2)")
    tune.add_argument("--out", required=True, help="where to write the fine-tuned checkpoint")
    tune.add_argument("--steps", type=int, default=0, help="default: aligner.finetune_steps")
    tune.add_argument("--checkpoint", help="trained aligner (default: paths.models/aligner.pt)")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tune.set_defaults(run=_finetune)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_tool_state()
    try:
        args.run(args)
    except (ConfigError, assets.AssetError, OSError, ValueError) as exc:
        sys.exit(f"heser {args.command}: error: {exc}")
