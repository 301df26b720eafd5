"""Shared command line of the stage entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from heser.config import Config, ConfigError, load_config, parse_override
from heser.env import configure_tool_state


def run_stage(name: str, body: Callable[[Config, argparse.Namespace], object],
              workers: bool = False) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}",
                                     description=f"DVC stage `{name}`")
    parser.add_argument("--params", default="params.yaml", help="parameters file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a parameter, e.g. --set crop.size=512")
    if workers:
        parser.add_argument("--workers", type=int, default=0,
                            help="worker processes (0 = one per CPU core)")
    args = parser.parse_args()
    configure_tool_state()
    try:
        cfg = load_config(args.params, dict(parse_override(s) for s in args.set))
        print(f"{name}: {body(cfg, args)}")
    except (ConfigError, RuntimeError, OSError, ValueError) as exc:  # ours name file and problem
        sys.exit(f"{name}: error: {exc}")
