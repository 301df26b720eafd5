"""Join crops and label maps, split by identity, write shards, the index and the reports."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from heser.config import Split
from heser.data.shards import INDEX_NAME, read_tar, write_index, write_split
from heser.preprocess.items import split_key

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ShardSummary:
    samples: dict[str, int]
    identities: dict[str, list[str]]
    videos: int
    unparsed: int


def assign_splits(identities: list[str], split: Split, seed: int) -> dict[str, str]:
    """Identity -> split. Identities are ranked by a seeded hash (so the assignment does not
    depend on list order); test and val each take their share, at least one when the share is
    non-zero and there are identities to spare; train keeps the rest."""
    ranked = sorted(set(identities),
                    key=lambda ident: hashlib.sha256(f"{seed}:{ident}".encode()).hexdigest())
    counts = {}
    for name in ("test", "val"):
        share = getattr(split, name)
        counts[name] = max(1, round(share * len(ranked))) if share > 0 and len(ranked) > 2 else 0
    out, start = {}, 0
    for name in ("test", "val"):
        for ident in ranked[start:start + counts[name]]:
            out[ident] = name
        start += counts[name]
    out.update({ident: "train" for ident in ranked[start:]})
    return out


def joined_samples(crop_tar: Path, parse_tar: Path) -> Iterator[dict[str, bytes]]:
    """Crop samples that have a label map, with the parser's metadata merged into the JSON."""
    labels = {s["__key__"]: s for s in read_tar(parse_tar)} if parse_tar.exists() else {}
    for sample in read_tar(crop_tar):
        label = labels.get(sample["__key__"])
        if label is None:
            continue
        meta = json.loads(sample["json"]) | json.loads(label["json"])
        yield {"__key__": sample["__key__"], "img.png": sample["img.png"],
               "parse.png": label["parse.png"], "lmk.npy": sample["lmk.npy"],
               "json": json.dumps(meta).encode()}


def write_shards(crop_dir: Path, parse_dir: Path, shard_dir: Path, split: Split, seed: int,
                 max_per_shard: int, video_keys: Iterable[str] | None = None) -> ShardSummary:
    """Shard every video in ``crop_dir``, or only ``video_keys`` (the flow's finished ones)."""
    if video_keys is None:
        crop_tars = sorted(crop_dir.glob("*.tar"))
    else:
        crop_tars = sorted(crop_dir / f"{key}.tar" for key in video_keys)
    identities = [split_key(f"{t.stem}__0")[0] for t in crop_tars]
    assignment = assign_splits(identities, split, seed)
    index_rows: list[dict[str, object]] = []
    samples = {name: 0 for name in SPLITS}
    total_crops = 0
    for name in SPLITS:
        tars = [t for t, ident in zip(crop_tars, identities) if assignment[ident] == name]
        metas: dict[str, dict] = {}
        stream = _recording(tars, parse_dir, metas)
        for key, shard in write_split(stream, shard_dir, name, max_per_shard):
            meta = metas.pop(key)
            index_rows.append(_index_row(key, name, shard, meta))
            samples[name] += 1
        total_crops += sum(1 for tar in tars for _ in read_tar(tar))
    write_index(index_rows, shard_dir / INDEX_NAME)
    by_split = {name: sorted(i for i, s in assignment.items() if s == name) for name in SPLITS}
    return ShardSummary(samples, by_split, len(crop_tars), total_crops - len(index_rows))


def _recording(tars: list[Path], parse_dir: Path,
               metas: dict[str, dict]) -> Iterator[dict[str, bytes]]:
    """Joined samples of ``tars``, noting each one's metadata for the index as it passes."""
    for tar in tars:
        for sample in joined_samples(tar, parse_dir / tar.name):
            metas[sample["__key__"]] = json.loads(sample["json"])
            yield sample


def _index_row(key: str, split: str, shard: str, meta: dict) -> dict[str, object]:
    identity, video, frame = split_key(key)
    return {"key": key, "identity": identity, "video": video, "frame": frame, "split": split,
            "shard": shard, "source_file": meta["source_file"], "kind": meta["kind"],
            "n_faces": meta["n_faces"], "inside_fraction": meta["inside_fraction"]}
