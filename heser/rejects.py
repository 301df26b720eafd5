"""The rejects report: every input that a stage skipped (or kept under a stated policy).

One row per (file, frame): ``frame`` is -1 for a whole file (a corrupt video, a bad manifest
row). ``action`` says what happened: ``skipped`` (nothing was produced from it) or a policy that
kept it, e.g. ``kept-largest`` when several faces were found.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from heser.io import atomic_path


@dataclass(frozen=True)
class Reject:
    stage: str
    file: str
    frame: int
    reason: str
    action: str = "skipped"


REJECTS_FILE = "rejects.csv"  # each stage's rejects, in its output directory
COLUMNS = [f.name for f in fields(Reject)]


def write_rejects(path: Path, rejects: Iterable[Reject]) -> None:
    """Write the report atomically (header even when empty, so "no rejects" is visible)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for reject in rejects:
            writer.writerow(asdict(reject))


def read_rejects(path: Path) -> list[Reject]:
    with open(path, newline="") as fh:
        return [
            Reject(r["stage"], r["file"], int(r["frame"]), r["reason"], r["action"])
            for r in csv.DictReader(fh)
        ]
