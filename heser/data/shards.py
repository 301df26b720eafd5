"""WebDataset shards and the Parquet sample index.

A sample is ``<key>.img.png`` (RGB crop), ``<key>.parse.png`` (uint8 HeSer label map),
``<key>.lmk.npy`` (landmarks in crop pixels) and ``<key>.json`` (metadata); keys are
``<identity>__<video>__<frame06d>`` (no dots: WebDataset splits keys at the first dot).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from heser.io import atomic_path, decode_npy, decode_png

if TYPE_CHECKING:
    import webdataset as wds

INDEX_NAME = "index.parquet"
# Fixed member timestamps: the same samples give byte-identical tars, so DVC sees no change
# when a stage reruns on the same inputs.
TAR_MTIME = 0.0
INDEX_SCHEMA = pa.schema([
    ("key", pa.string()), ("identity", pa.string()), ("video", pa.string()),
    ("frame", pa.int32()), ("split", pa.string()), ("shard", pa.string()),
    ("source_file", pa.string()), ("kind", pa.string()), ("n_faces", pa.int16()),
    ("inside_fraction", pa.float32()),
])


def tar_writer(path: Path) -> wds.TarWriter:
    # Imported here: webdataset imports torch (seconds of CPU), which a preprocessing worker
    # that only writes and reads tars never needs.
    import webdataset as wds

    return wds.TarWriter(str(path), mtime=TAR_MTIME)


def read_tar(path: Path) -> Iterator[dict[str, bytes]]:
    """Raw samples of one tar, in order (bytes per extension, plus ``__key__``).

    No node or worker splitting: WebDataset's defaults would hand the one tar to a single
    DataLoader worker (the others get nothing) and refuse to run under torchrun."""
    import webdataset as wds  # as in tar_writer

    for sample in wds.WebDataset(str(path), shardshuffle=False, empty_check=False,
                                 nodesplitter=None, workersplitter=None):
        yield {k: v for k, v in sample.items() if k != "__url__" and k != "__local_path__"}


def decode_sample(sample: dict[str, bytes]) -> dict[str, object]:
    """Bytes -> arrays: img (HxWx3 uint8), parse (HxW uint8), lmk (N x 2|3), meta (dict)."""
    out: dict[str, object] = {"key": sample["__key__"], "meta": json.loads(sample["json"])}
    if "img.png" in sample:
        out["img"] = decode_png(sample["img.png"])
    if "parse.png" in sample:
        out["parse"] = decode_png(sample["parse.png"])
    if "lmk.npy" in sample:
        out["lmk"] = decode_npy(sample["lmk.npy"])
    return out


def write_split(samples: Iterable[dict[str, bytes]], shard_dir: Path, split: str,
                max_per_shard: int) -> list[tuple[str, str]]:
    """Write one split's shards (``<split>-000000.tar``...); returns (key, shard name) pairs.

    Each shard is written under a temporary name and renamed when complete.
    """
    written: list[tuple[str, str]] = []
    writer: wds.TarWriter | None = None
    shard_index, in_shard = 0, 0
    pending: list[tuple[Path, Path]] = []
    try:
        for sample in samples:
            if writer is None or in_shard >= max_per_shard:
                if writer is not None:
                    writer.close()
                    shard_index += 1
                final = shard_dir / f"{split}-{shard_index:06d}.tar"
                tmp = final.with_name(f".tmp-{final.name}")
                pending.append((tmp, final))
                writer, in_shard = tar_writer(tmp), 0
            writer.write(sample)
            written.append((sample["__key__"], f"{split}-{shard_index:06d}.tar"))
            in_shard += 1
    finally:
        if writer is not None:
            writer.close()
    for tmp, final in pending:
        tmp.replace(final)
    return written


def write_index(rows: list[dict[str, object]], path: Path) -> None:
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_index(path: Path) -> pa.Table:
    return pq.read_table(path)
