"""The four preprocessing stages end to end on real sample files, with every kind of bad input.

Bad inputs are made from real files: an empty file, the head of a real video (its index is at
the end, so the container is unreadable), the dress of a real portrait (no face), two real
portraits side by side, and a real portrait saved as grayscale, RGBA and 16-bit PNG.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from heser.data.shards import decode_sample, read_index, read_tar
from heser.face.labels import Region
from heser.preprocess.download import run_download
from heser.preprocess.errors import StageError
from heser.preprocess.stages import run_crop, run_parse, run_shard
from heser.rejects import read_rejects
from tests.conftest import SAMPLE, make_config, read_rgb

GOOD = [
    ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
    ("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
    ("videos/mead_M030_front_sad_level3_001.mp4", "M030"),
    ("videos/vr1_young_asian_man_suit.mp4", "man_suit"),
    ("images/st_woman_B_happy1.png", "woman_B"),
]
FIELDS = ["file", "identity", "kind", "url", "sha256", "bytes", "license"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bad_inputs(mirror: Path) -> list[tuple[str, str]]:
    """Write the bad inputs into ``mirror``; return (file, identity) rows for them."""
    (mirror / "videos").mkdir(parents=True)
    (mirror / "images").mkdir()
    (mirror / "videos/empty.mp4").write_bytes(b"")
    video = (SAMPLE / "videos/lp_d3_woman_brown_hair.mp4").read_bytes()
    (mirror / "videos/head_only.mp4").write_bytes(video[:60_000])
    dress = read_rgb("images/lp_d30jpg_asian_woman_black_dress.jpg")
    Image.fromarray(dress[int(dress.shape[0] * 0.62):]).save(mirror / "images/dress.png")
    left, right = read_rgb("images/dt_woman_D_crop256.png"), read_rgb("images/dt_man_E_crop256.png")
    Image.fromarray(np.hstack([left, right])).save(mirror / "images/two_people.png")
    portrait = read_rgb("images/dt_woman_F_crop256.png")
    Image.fromarray(portrait).convert("L").save(mirror / "images/gray.png")
    rgba = np.dstack([portrait, np.full(portrait.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba).save(mirror / "images/rgba.png")
    bgr16 = cv2.cvtColor(portrait, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    cv2.imwrite(str(mirror / "images/deep16.png"), bgr16)
    return [("videos/empty.mp4", "empty"), ("videos/head_only.mp4", "broken"),
            ("images/dress.png", "nobody"), ("images/two_people.png", "pair"),
            ("images/gray.png", "woman_F"), ("images/rgba.png", "woman_F"),
            ("images/deep16.png", "woman_F")]


def _manifest(path: Path, mirror: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for file, identity in rows:
            local = mirror / file if (mirror / file).exists() else SAMPLE / file
            writer.writerow([file, identity, "", f"http://127.0.0.1:9/{file}", _sha(local),
                             local.stat().st_size, "test"])
        writer.writerow(["images/no_url.png", "x", "image", "", "", "", ""])  # corrupt row
        # the right file with a wrong checksum: must fail and leave nothing behind
        writer.writerow(["images/dt_man_E_crop256.png", "man_E", "image",
                         "http://127.0.0.1:9/x", "0" * 64, "", ""])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("pipeline")
    mirror = tmp / "mirror"
    rows = GOOD + _bad_inputs(mirror)
    _manifest(tmp / "manifest.csv", mirror, rows)
    cfg = make_config(tmp, **{
        "assets.data_manifest": str(tmp / "manifest.csv"),
        "assets.mirrors": [str(mirror), str(SAMPLE), str(SAMPLE.parents[1] / "weights")],
        "assets.retries": 1, "crop.video.max_frames": 5, "crop.video.stride": 6,
    })
    with pytest.raises(StageError, match="sha256 mismatch"):
        run_download(cfg)
    tolerant = cfg.model_copy(update={"assets": cfg.assets.model_copy(
        update={"fail_on_error": False})})
    run_download(tolerant)
    crop = run_crop(cfg, workers=2)
    parse = run_parse(cfg, workers=1)
    metrics = run_shard(cfg)
    return cfg, crop, parse, metrics


def _rejects(cfg) -> list:
    return read_rejects(cfg.path(cfg.paths.reports) / "rejects.csv")


def test_checksum_mismatch_leaves_no_file(pipeline):
    cfg, *_ = pipeline
    raw = cfg.path(cfg.paths.raw)
    assert not (raw / "images/dt_man_E_crop256.png").exists()
    assert not list(raw.rglob("*.part")) and not list(raw.rglob(".tmp-*"))
    reasons = {r.file: r.reason for r in _rejects(cfg) if r.stage == "download"}
    assert "sha256 mismatch" in reasons["images/dt_man_E_crop256.png"]
    assert any("url" in reason for file, reason in reasons.items() if ":" in file)


def test_every_bad_input_is_accounted_for(pipeline):
    cfg, *_ = pipeline
    by_file = {}
    for r in _rejects(cfg):
        by_file.setdefault(r.file, []).append(r)
    assert "zero-byte" in by_file["videos/empty.mp4"][0].reason
    assert "not a readable video" in by_file["videos/head_only.mp4"][0].reason
    assert by_file["images/dress.png"][0].reason == "no face found"
    (pair,) = by_file["images/two_people.png"]
    assert pair.reason == "2 faces found" and pair.action == "kept-largest"
    for converted in ("gray", "rgba", "deep16"):  # handled, not rejected
        assert f"images/{converted}.png" not in by_file


def test_shards_round_trip_and_index(pipeline):
    cfg, crop, parse, metrics = pipeline
    shard_dir = cfg.path(cfg.paths.shards)
    index = read_index(shard_dir / "index.parquet").to_pylist()
    assert len(index) == metrics["total_samples"] == parse["samples"]
    seen = {}
    for tar in sorted(shard_dir.glob("*.tar")):
        for raw in read_tar(tar):
            sample = decode_sample(raw)
            seen[sample["key"]] = (tar.name, sample)
    assert set(seen) == {row["key"] for row in index}
    for row in index:
        shard, sample = seen[row["key"]]
        assert shard == row["shard"] and shard.startswith(row["split"])
        assert "." not in row["key"] and row["key"].count("__") == 2
        assert sample["img"].shape == (256, 256, 3) and sample["img"].dtype == np.uint8
        assert sample["parse"].shape == (256, 256) and sample["parse"].max() <= max(Region)
        assert sample["lmk"].shape == (468, 3)
        assert sample["meta"]["identity"] == row["identity"]
        assert sample["meta"]["frame"] == row["frame"]
    splits = {}
    for row in index:
        splits.setdefault(row["identity"], set()).add(row["split"])
    assert all(len(s) == 1 for s in splits.values())  # no identity in two splits
    assert len(index) == len({(r["video"], r["frame"]) for r in index})


def test_conversions_are_recorded(pipeline):
    cfg, *_ = pipeline
    metas = {}
    for tar in cfg.path(cfg.paths.shards).glob("*.tar"):
        for raw in read_tar(tar):
            meta = json.loads(raw["json"])
            metas[meta["source_file"]] = meta["notes"]
    assert metas["images/gray.png"] == ["grayscale expanded to RGB"]
    assert metas["images/rgba.png"] == ["alpha composited on grey"]
    assert metas["images/deep16.png"] == ["16-bit converted to 8-bit"]


def test_reports(pipeline):
    cfg, *_ = pipeline
    reports = cfg.path(cfg.paths.reports)
    sheet = Image.open(reports / "contact_sheet.png")
    assert sheet.size[0] > 500 and sheet.text["heser:synthetic"] == "true"
    metrics = json.loads((reports / "preprocess.json").read_text())
    assert sum(metrics["identities"].values()) == len(
        {i for ids in metrics["split_identities"].values() for i in ids})
    assert any(k.startswith("crop: no face found") for k in metrics["rejects"])


def test_face_too_small_is_rejected(tmp_path: Path, face_backend):
    from heser.preprocess.crop import crop_item
    from heser.preprocess.items import MediaItem

    cfg = make_config(tmp_path, **{"crop.min_face_px": 120})
    item = MediaItem("images/insightface_Tom_Hanks_54745.png",
                     SAMPLE / "images/insightface_Tom_Hanks_54745.png", "C", "image")
    result = crop_item(item, face_backend, cfg, tmp_path / "out.tar")
    assert result.samples == 0
    assert result.rejects[0].reason.startswith("face too small (94 px")
    assert (tmp_path / "out.tar").exists()  # written (empty): the item is done, not lost


def test_rerun_gives_byte_identical_tars(tmp_path: Path, face_backend):
    """DVC must see no change when a stage reruns on the same inputs."""
    from heser.preprocess.crop import crop_item
    from heser.preprocess.items import MediaItem

    cfg = make_config(tmp_path, **{"crop.video.max_frames": 3})
    item = MediaItem("videos/mead_W009_front_sad_level3_001.mp4",
                     SAMPLE / "videos/mead_W009_front_sad_level3_001.mp4", "W009", "video")
    crop_item(item, face_backend, cfg, tmp_path / "a.tar")
    crop_item(item, face_backend, cfg, tmp_path / "b.tar")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
