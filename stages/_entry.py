"""Shared command line of the stage entry points."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from heser.config import Config, add_config_arguments, config_from_args, exit_on_error
from heser.env import configure_tool_state


def run_stage(name: str, body: Callable[[Config, argparse.Namespace], object],
              workers: bool = False) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}",
                                     description=f"DVC stage `{name}`")
    add_config_arguments(parser)
    if workers:
        parser.add_argument("--workers", type=int, default=0,
                            help="worker processes (0 = one per CPU core)")
    args = parser.parse_args()
    configure_tool_state()
    with exit_on_error(name, RuntimeError, ValueError):
        print(f"{name}: {body(config_from_args(args), args)}")
