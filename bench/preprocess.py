"""Frames per second of the crop and parse steps on real sample videos (offline backends).

    python bench/preprocess.py [--frames 96] [--size 256]

crop = detection + face mesh + window + warp (+ PNG encode); parse = label map of a crop.
Both single-process: the stages run one such worker per CPU core.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from heser import assets
from heser.config import load_config
from heser.data.video_io import VideoReader
from heser.env import configure_tool_state
from heser.face.align import transform_points, warp_crop, window_from_points
from heser.face.mediapipe import MediaPipeFace
from heser.face.parse_mediapipe import MediaPipeParser
from heser.io import png_bytes

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ["videos/lp_d3_woman_brown_hair.mp4", "videos/vr4_woman_dark_hair_news.mp4",
          "videos/lp_d13_asian_man_striped_shirt.mp4",
          "videos/mead_W009_front_happy_level3_001.mp4"]


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--frames", type=int, default=96)
    args.add_argument("--size", type=int, default=256)
    opts = args.parse_args()
    configure_tool_state()
    cfg = load_config(ROOT / "params.yaml")
    mirrors = assets.mirror_dirs(cfg.assets.mirrors, cfg.root)
    weights = cfg.path(cfg.paths.weights)
    rows, _ = assets.read_manifest(cfg.path(cfg.assets.weights_manifest))
    assets.fetch_all(rows, weights, mirrors, progress=False)
    raw = [assets.fetch(row, cfg.path(cfg.paths.raw), mirrors, progress=False)
           for row in assets.read_manifest(cfg.path(cfg.assets.data_manifest))[0]
           if row.file in VIDEOS]
    per_video = -(-opts.frames // len(raw))
    frames = [rgb for path in raw for _, rgb in VideoReader(path).frames(2, per_video)]
    backend, parser = MediaPipeFace(weights), MediaPipeParser(weights)

    crops, landmarks = [], []
    start = time.perf_counter()
    for rgb in frames:
        face = backend(rgb)[0]
        window = window_from_points(face.five_points, cfg.crop.scale, cfg.crop.center_shift)
        crop, matrix = warp_crop(rgb, window, opts.size)
        png_bytes(crop)
        crops.append(crop)
        landmarks.append(transform_points(face.landmarks, matrix))
    crop_s = time.perf_counter() - start

    start = time.perf_counter()
    for crop, lmk in zip(crops, landmarks):
        parser(crop, lmk, "mediapipe468")
    parse_s = time.perf_counter() - start

    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{len(frames)} real frames ({', '.join(sizes)}), crop size {opts.size}")
    for name, seconds in (("crop ", crop_s), ("parse", parse_s)):
        print(f"{name}: {len(frames) / seconds:6.1f} frames/s  "
              f"({1000 * seconds / len(frames):.1f} ms/frame)")


if __name__ == "__main__":
    main()
