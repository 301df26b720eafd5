"""A contact sheet: one tile per video (its middle crop with the label map and the five
alignment points drawn on it), so a person sees at a glance that crops and parsing are right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from heser.data.shards import decode_sample, read_index, read_tar
from heser.face.labels import PALETTE, Region, overlay
from heser.io import save_png

TILE = 176
CAPTION = 14


def contact_sheet(shard_dir: Path, columns: int = 8) -> np.ndarray:
    index = read_index(shard_dir / "index.parquet").to_pylist()
    by_video: dict[str, list[dict]] = {}
    for row in index:
        by_video.setdefault(f"{row['identity']}__{row['video']}", []).append(row)
    picks = {rows[len(rows) // 2]["key"]: rows[len(rows) // 2] for rows in by_video.values()}
    tiles = [_tile(sample, picks[sample["key"]]) for sample in _samples(shard_dir, picks)]
    rows = max(1, -(-len(tiles) // columns))
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + CAPTION) + 22), "white")
    for i, tile in enumerate(sorted(tiles, key=lambda t: t[0])):
        sheet.paste(tile[1], ((i % columns) * TILE, (i // columns) * (TILE + CAPTION)))
    _legend(ImageDraw.Draw(sheet), rows * (TILE + CAPTION) + 4)
    return np.asarray(sheet)


def _samples(shard_dir: Path, picks: dict[str, dict]):
    for shard in sorted({row["shard"] for row in picks.values()}):
        for raw in read_tar(shard_dir / shard):
            if raw["__key__"] in picks:
                yield decode_sample(raw)


def _tile(sample: dict, row: dict) -> tuple[str, Image.Image]:
    image = overlay(sample["img"], sample["parse"])
    tile = Image.new("RGB", (TILE, TILE + CAPTION), "white")
    crop = Image.fromarray(image).resize((TILE - 4, TILE - 4), Image.BILINEAR)
    draw = ImageDraw.Draw(crop)
    scale = (TILE - 4) / sample["img"].shape[1]
    for x, y in np.asarray(sample["meta"]["five_points"]) * scale:
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(0, 255, 0))
    tile.paste(crop, (2, 2))
    caption = f"{row['split'][:2]} {row['video'][:24]}"
    ImageDraw.Draw(tile).text((3, TILE - 1), caption, fill="black")
    return f"{row['split']}{row['key']}", tile


def _legend(draw: ImageDraw.ImageDraw, y: int) -> None:
    x = 4
    for region in Region:
        if region == Region.BACKGROUND:
            continue
        draw.rectangle((x, y, x + 12, y + 12), fill=tuple(int(c) for c in PALETTE[region]),
                       outline="black")
        draw.text((x + 16, y), region.name.lower(), fill="black")
        x += 16 + 7 * len(region.name) + 12


def save_contact_sheet(shard_dir: Path, path: Path) -> None:
    save_png(path, contact_sheet(shard_dir), source_type="compositeSynthetic")
