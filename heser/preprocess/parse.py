"""Parse one video's crops into HeSer label maps (one tar of ``<key>.parse.png`` per video)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heser.data.shards import decode_sample, read_tar, tar_writer
from heser.face.labels import Region
from heser.face.types import FaceParser
from heser.io import atomic_path, png_bytes
from heser.preprocess.crop import ItemResult
from heser.rejects import Reject

STAGE = "parse"
def parse_item(crop_tar: Path, parser: FaceParser, out_tar: Path,
               min_face_share: float) -> ItemResult:
    """Label every crop in ``crop_tar``; write the maps to ``out_tar`` atomically.

    A crop whose map has less face than ``min_face_share`` of the image (parse.min_face_share)
    is useless to the blender's region correspondence: a failed parse, recorded and skipped.
    """
    result = ItemResult(str(crop_tar.name))
    with atomic_path(out_tar) as tmp, tar_writer(tmp) as sink:
        for raw in read_tar(crop_tar):
            sample = decode_sample(raw)
            meta = sample["meta"]
            try:
                label_map = parser(sample["img"], sample["lmk"], meta["scheme"])
            except Exception as exc:  # noqa: BLE001 - one bad crop must not stop the video
                result.rejects.append(Reject(STAGE, meta["source_file"], meta["frame"],
                                             f"parser {parser.name} failed: {exc}"))
                continue
            problem = _check(label_map, sample["img"].shape[:2], min_face_share)
            if problem:
                result.rejects.append(Reject(STAGE, meta["source_file"], meta["frame"], problem))
                continue
            sink.write({
                "__key__": sample["key"],
                "parse.png": png_bytes(label_map, source_type="algorithmicMedia",
                                       parser=f"{parser.name} {parser.version}"),
                "json": json.dumps({"parser": parser.name, "parser_version": parser.version,
                                    "regions": sorted(int(r) for r in np.unique(label_map))}
                                   ).encode(),
            })
            result.samples += 1
    return result


def _check(label_map: np.ndarray, shape: tuple[int, int], min_face_share: float) -> str:
    if label_map.shape != shape or label_map.dtype != np.uint8:
        return f"label map has shape {label_map.shape} {label_map.dtype}, expected {shape} uint8"
    if label_map.max() > max(Region):
        return f"label map holds unknown region id {int(label_map.max())}"
    face_share = float(np.isin(label_map, (Region.FACE, Region.NOSE)).mean())
    if face_share < min_face_share:
        return f"parse found almost no face ({face_share:.1%} of the crop)"
    return ""
