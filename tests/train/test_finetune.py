"""`heser finetune`: continues training on crops that the one cropper cut from real photos."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch

from heser.face.backends import make_face_backend
from heser.face.cropper import Cropper
from heser.swap_media import source_crops
from heser.train.checkpoint import save_checkpoint
from heser.train.finetune import FinetuneError, finetune
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


def test_landmark_motion_input_is_refused_before_anything_is_written(base, tmp_path: Path):
    cfg, checkpoint, crops = base
    landmarks = cfg.model_copy(update={"aligner": cfg.aligner.model_copy(
        update={"motion_input": "landmarks"})})
    with pytest.raises(FinetuneError, match="motion_input: landmarks"):
        finetune(landmarks, crops, ["a.png", "b.png"], checkpoint, 1, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
