"""The preprocessing DVC stages as library functions: crop, parse, shard (download is
heser.preprocess.download).

stages/*.py are thin command-line wrappers around these; the Prefect flow calls the same
per-item functions (crop_item, parse_item) that these map over.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from heser.config import Config
from heser.face.backends import make_face_backend, make_parser
from heser.io import atomic_path, fresh_dir
from heser.preprocess.contact_sheet import save_contact_sheet
from heser.preprocess.crop import ItemResult, crop_item
from heser.preprocess.items import INVENTORY, MediaItem, read_inventory
from heser.preprocess.parse import parse_item
from heser.preprocess.runner import map_items
from heser.preprocess.shard import write_shards
from heser.rejects import REJECTS_FILE, Reject, read_rejects, write_rejects


def _crop_worker(cfg: Config):
    return cfg, make_face_backend(cfg, cfg.path(cfg.paths.weights))


def _crop_one(state, item: MediaItem) -> ItemResult:
    cfg, backend = state
    return crop_item(item, backend, cfg, cfg.path(cfg.paths.crops) / f"{item.video_key}.tar")


def run_crop(cfg: Config, workers: int = 0) -> dict[str, int]:
    raw_dir = cfg.path(cfg.paths.raw)
    items = read_inventory(raw_dir / INVENTORY, raw_dir)
    out_dir = fresh_dir(cfg.path(cfg.paths.crops))
    results = map_items(_crop_one, items, _crop_worker, (cfg,), workers, "crop")
    write_rejects(out_dir / REJECTS_FILE, [r for result in results for r in result.rejects])
    return _counts(results)


def _parse_worker(cfg: Config):
    return cfg, make_parser(cfg, cfg.path(cfg.paths.weights))


def _parse_one(state, crop_tar: Path) -> ItemResult:
    cfg, parser = state
    return parse_item(crop_tar, parser, cfg.path(cfg.paths.parse) / crop_tar.name,
                      cfg.parse.min_face_share)


def run_parse(cfg: Config, workers: int = 0) -> dict[str, int]:
    crop_tars = sorted(cfg.path(cfg.paths.crops).glob("*.tar"))
    out_dir = fresh_dir(cfg.path(cfg.paths.parse))
    results = map_items(_parse_one, crop_tars, _parse_worker, (cfg,), workers, "parse")
    write_rejects(out_dir / REJECTS_FILE, [r for result in results for r in result.rejects])
    return _counts(results)


def _counts(results: list[ItemResult]) -> dict[str, int]:
    return {"items": len(results), "samples": sum(r.samples for r in results),
            "rejects": sum(len(r.rejects) for r in results)}


def run_shard(cfg: Config, video_keys: Iterable[str] | None = None) -> dict[str, object]:
    """Shards + index, then the reports: merged rejects, summary metrics, contact sheet.

    ``video_keys`` limits the shards to those videos (default: every crop tar)."""
    shard_dir = fresh_dir(cfg.path(cfg.paths.shards))
    summary = write_shards(cfg.path(cfg.paths.crops), cfg.path(cfg.paths.parse), shard_dir,
                           cfg.shard.split, cfg.shard.seed, cfg.shard.max_samples_per_shard,
                           video_keys)
    reports = cfg.path(cfg.paths.reports)
    rejects = collect_rejects(cfg)
    write_rejects(reports / REJECTS_FILE, rejects)
    metrics = {
        "samples": summary.samples, "total_samples": sum(summary.samples.values()),
        "identities": {k: len(v) for k, v in summary.identities.items()},
        "split_identities": summary.identities, "inputs": summary.videos,
        "rejects": dict(Counter(_reason_kind(r) for r in rejects)),
    }
    with atomic_path(reports / "preprocess.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    save_contact_sheet(shard_dir, reports / "contact_sheet.png")
    return metrics


def collect_rejects(cfg: Config) -> list[Reject]:
    paths = [cfg.path(cfg.paths.raw) / REJECTS_FILE, cfg.path(cfg.paths.crops) / REJECTS_FILE,
             cfg.path(cfg.paths.parse) / REJECTS_FILE]
    return [r for path in paths if path.exists() for r in read_rejects(path)]


def _reason_kind(reject: Reject) -> str:
    """A short category for counting ("face too small (31 px...)" -> "crop: face too small")."""
    reason = reject.reason.split(": ")[-1] if reject.frame == -1 else reject.reason
    return f"{reject.stage}: {reason.split(' (')[0]} [{reject.action}]"
