"""`heser finetune`: continues training on crops that the one cropper cut from real photos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from heser.config import Config
from heser.face.backends import make_face_backend
from heser.face.cropper import Cropper
from heser.swap_media import source_crops
from heser.train.checkpoint import save_checkpoint
from heser.train.finetune import FinetuneError, episodes, finetune, subject_landmarks
from tests.conftest import sample_path
from tests.train.test_gan import ONE, _tiny, _trainer

PHOTOS = ["images/dt_woman_D_crop256.png", "images/dt_woman_D_uncropped.jpg"]


@pytest.fixture
def base(tmp_path: Path, weights_dir: Path):
    cfg = _tiny(tmp_path, **{"paths.weights": str(weights_dir)})
    checkpoint = tmp_path / "aligner.pt"
    save_checkpoint(checkpoint, _trainer(cfg, ONE).state_dict([{"epoch": 0, "batch": 0}], []))
    cropper = Cropper(make_face_backend(cfg, weights_dir), cfg.crop)
    crops = source_crops(cfg, cropper, [sample_path(p) for p in PHOTOS], [])
    return cfg, checkpoint, crops


def test_finetune_moves_the_generator_and_records_its_sources(base, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    cfg, checkpoint, crops = base
    out = tmp_path / "subject.pt"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = finetune(cfg, crops, [Path(p).name for p in PHOTOS], checkpoint, 2, out)
    # an MLflow run named for what it is: a fine-tune of this subject, not a training stage
    runs = mlflow.search_runs(experiment_names=["heser-finetune"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].info.run_name.startswith("finetune dt_woman_D_crop256 +1 ")
    assert "train/total" in runs[0].data.metrics
    assert result["steps"] == 2 and result["sources"] == 2 and result["crops"] == 2
    tuned = torch.load(out, weights_only=True)
    original = torch.load(checkpoint, weights_only=True)["generator"]
    assert tuned["steps"] == 2 and tuned["sources"] == [Path(p).name for p in PHOTOS]
    changed = [k for k, v in tuned["generator"].items()
               if v.is_floating_point() and not torch.equal(v, original[k])]
    assert len(changed) > len(original) // 2


def test_one_crop_is_not_enough(base, tmp_path: Path):
    cfg, checkpoint, crops = base
    with pytest.raises(FinetuneError, match="at least 2 crops"):
        finetune(cfg, crops[:1], ["a.png"], checkpoint, 1, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def _landmark_input(cfg: Config) -> Config:
    return cfg.model_copy(update={"aligner": cfg.aligner.model_copy(
        update={"motion_input": "landmarks"})})


def test_with_the_landmark_input_each_target_brings_its_own_landmarks(base, tmp_path: Path,
                                                                     monkeypatch):
    cfg, checkpoint, crops = base
    landmarks = subject_landmarks(_landmark_input(cfg), crops)
    assert subject_landmarks(cfg, crops) is None  # the image input reads none
    assert landmarks.shape == (2, 468, 3)
    # the crop's own landmarks in crop pixels: the eye corners lie inside the crop
    side = crops[0].image.shape[0]
    assert ((landmarks[:, [33, 263], :2] > 0) & (landmarks[:, [33, 263], :2] < side)).all()
    images = torch.zeros(2, 3, 8, 8)
    batch = episodes(images, 2, 6, torch.Generator().manual_seed(0), landmarks)
    targets = [int(key.rsplit("__", 1)[1]) for key in batch["target_key"]]
    assert torch.equal(batch["target_landmarks"], landmarks[targets])
    # and the landmark aligner fine-tunes on them (a landmark-input base checkpoint)
    cfg = _landmark_input(cfg)
    base_ckpt = tmp_path / "landmark_aligner.pt"
    save_checkpoint(base_ckpt, _trainer(cfg, ONE).state_dict([{"epoch": 0, "batch": 0}], []))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = finetune(cfg, crops, ["a.png", "b.png"], base_ckpt, 1, tmp_path / "x.pt")
    assert result["steps"] == 1 and (tmp_path / "x.pt").exists()


def test_unusable_landmarks_are_refused_naming_the_crop(base, tmp_path: Path):
    cfg, checkpoint, crops = base
    broken = replace(crops[1], face=replace(crops[1].face,
                                            landmarks=np.full((468, 3), np.nan, np.float32)))
    with pytest.raises(FinetuneError, match="source crop 2 of 2: .*NaN"):
        finetune(_landmark_input(cfg), [crops[0], broken], ["a.png", "b.png"], checkpoint, 1,
                 tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
