"""bench/kshot_loader.py on tiny shards written by the shard stage's writers from a real photo."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from heser.data.kshot import KShotEpisodes
from heser.data.shards import (
    INDEX_NAME,
    decode_sample,
    read_index,
    read_tar,
    write_index,
    write_split,
)
from heser.io import npy_bytes, png_bytes
from tests.conftest import ROOT, read_rgb

SCRIPT = ROOT / "bench" / "kshot_loader.py"
CROP, FRAMES = 48, 9  # K=8 at the paper profile needs 9 frames
VIDEOS = [("woman_B", "clip_a"), ("woman_B", "clip_b"), ("other", "clip_c")]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_kshot_loader", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three videos of FRAMES crops each (a real photo, shifted per frame) with label maps."""
    photo = cv2.resize(read_rgb("images/st_woman_B_happy1.png"), (CROP + FRAMES, CROP + FRAMES))
    labels = np.zeros((CROP, CROP), np.uint8)
    labels[CROP // 4:3 * CROP // 4, CROP // 3:2 * CROP // 3] = 1
    labels[CROP // 2:, :4] = 7
    samples, rows = [], []
    for identity, video in VIDEOS:
        for frame in range(FRAMES):
            key = f"{identity}__{video}__{frame:06d}"
            samples.append({"__key__": key,
                            "img.png": png_bytes(np.ascontiguousarray(
                                photo[frame:frame + CROP, frame:frame + CROP])),
                            "parse.png": png_bytes(labels),
                            "lmk.npy": npy_bytes(np.full((5, 2), 10.0, np.float32)),
                            "json": json.dumps({"key": key}).encode()})
            rows.append({"key": key, "identity": identity, "video": video, "frame": frame,
                         "split": "train", "source_file": "images/st_woman_B_happy1.png",
                         "kind": "video", "n_faces": 1, "inside_fraction": 1.0})
    out = tmp_path_factory.mktemp("source")
    shard_of = dict(write_split(samples, out, "train", max_per_shard=5))
    write_index([{**row, "shard": shard_of[row["key"]]} for row in rows], out / INDEX_NAME)
    return out


def test_resized_shards_keep_the_index_and_scale_crops_labels_and_landmarks(shards: Path,
                                                                             tmp_path: Path):
    out = bench.resized_shards(shards, tmp_path / "big", "train", 2 * CROP, max_per_shard=4)
    before, after = read_index(shards / INDEX_NAME), read_index(out / INDEX_NAME)
    assert after.column("key").to_pylist() == before.column("key").to_pylist()
    assert len(set(after.column("shard").to_pylist())) == 7  # 27 samples, 4 per shard
    original = {s["key"]: s for tar in sorted(shards.glob("*.tar"))
                for s in map(decode_sample, read_tar(tar))}
    resized = [decode_sample(s) for tar in sorted(out.glob("*.tar")) for s in read_tar(tar)]
    assert len(resized) == len(original)
    for sample in resized:
        source = original[sample["key"]]
        assert sample["img"].shape == (2 * CROP, 2 * CROP, 3)
        assert np.array_equal(sample["parse"][::2, ::2], source["parse"])  # nearest: no new labels
        assert np.allclose(sample["lmk"], 2 * source["lmk"])
        assert sample["meta"] == source["meta"]
    episode = next(iter(KShotEpisodes(out, "train", 3, rank=0, world_size=1)))
    assert episode["sources"].shape == (3, 3, 2 * CROP, 2 * CROP)


def test_max_videos_keeps_the_first_videos(shards: Path, tmp_path: Path):
    out = bench.resized_shards(shards, tmp_path / "two", "train", CROP, 100, max_videos=2)
    assert set(read_index(out / INDEX_NAME).column("video").to_pylist()) == {"clip_a", "clip_b"}


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_rate_counts_whole_passes(shards: Path, workers: int):
    case = bench.Case("aligner", "cpu", CROP, 32, k=2, batch_size=2, episodes_per_video=3,
                      workers=workers, seed=0)
    rate = bench.loader_rate(shards, "train", case, workers, min_seconds=0.0)
    assert rate["passes"] == 1 and rate["episodes"] == len(VIDEOS) * 3
    assert rate["episodes_per_s"] > 0 and rate["cpu_ms_per_episode"] > 0


def test_workers_needed_and_step_option():
    assert bench.workers_needed(10.0, 100.0) == 10  # 10x of 10 episodes/s at 0.1 s each
    assert bench.workers_needed(1.0, 30.0) == 1
    assert bench.parse_step_option("aligner:paper=12.5") == (("aligner", "paper"), 12.5)
    with pytest.raises(Exception, match="MODEL:PROFILE=EPISODES_PER_S"):
        bench.parse_step_option("aligner=12")


def test_dry_run_writes_both_profiles(shards: Path, tmp_path: Path):
    out = tmp_path / "loader.json"
    subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--shards", str(shards),
                    "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())
    assert figures["dry_run"]
    seen = {(r["model"], r["profile"], r["workers"]) for r in figures["rows"]}
    assert seen == {(m, p, w) for m in ("aligner", "blender") for p in ("cpu", "paper")
                    for w in (0, 1)}
    assert {r["k"] for r in figures["rows"] if r["model"] == "aligner"} == {4, 8}
    assert all(r["k"] == 1 for r in figures["rows"] if r["model"] == "blender")


@pytest.mark.slow
def test_measure_step_reads_the_train_step_figures():
    case = bench.case_for("blender", "cpu")
    step = bench.measure_step(case, warmup=1, steps=1, extra=["--dry-run"])
    assert step["episodes_per_s"] > 0 and step["step_ms"] > 0
    assert "--model blender" in step["source"] and "--dry-run" in step["source"]
