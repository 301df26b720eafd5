"""What the preprocessing steps work on: downloaded media items and their sample keys."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from heser.assets import GENERIC_DIRS
from heser.data.media import is_video
from heser.io import atomic_path

INVENTORY = "downloaded.csv"  # in paths.raw: what the download stage fetched, one row a file
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class MediaItem:
    """One downloaded file: ``file`` is its manifest name, ``path`` where it lies locally."""

    file: str
    path: Path
    identity: str
    kind: str  # "video" | "image"
    sha256: str = ""

    @property
    def video_key(self) -> str:
        """``<identity>__<video>``: unique per file, no dots (WebDataset cuts keys at a dot)."""
        parts = [p for p in Path(self.file).with_suffix("").parts]
        if len(parts) > 1 and (parts[0] == self.identity or parts[0].lower() in GENERIC_DIRS):
            parts = parts[1:]
        return f"{key_part(self.identity)}__{key_part('-'.join(parts))}"


def key_part(text: str) -> str:
    """A key component: letters, digits, '-' and single '_' only."""
    cleaned = _UNSAFE.sub("-", text).strip("-")
    return re.sub("_{2,}", "_", cleaned) or "x"


def sample_key(video_key: str, frame: int) -> str:
    return f"{video_key}__{frame:06d}"


def split_key(key: str) -> tuple[str, str, int]:
    """Inverse of ``sample_key``: (identity, video, frame)."""
    identity, video, frame = key.split("__")
    return identity, video, int(frame)


def read_inventory(path: Path, raw_dir: Path) -> list[MediaItem]:
    """The download stage's record of fetched files (downloaded.csv)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        MediaItem(
            file=row["file"],
            path=raw_dir / row["file"],
            identity=row["identity"],
            kind="video" if row["kind"] == "video" or is_video(Path(row["file"])) else "image",
            sha256=row.get("sha256", ""),
        )
        for row in rows
        if row.get("kind", "") != "weights"
    ]


def write_inventory(path: Path, records: list[dict]) -> None:
    columns = ["file", "identity", "kind", "sha256", "bytes", "source"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
