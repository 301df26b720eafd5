"""`heser finetune`: crops real photos as the crop stage does and continues training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

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
    return cfg, checkpoint


def test_finetune_moves_the_generator_and_records_its_sources(base, tmp_path: Path):
    cfg, checkpoint = base
    out = tmp_path / "subject.pt"
    result = finetune(cfg, [sample_path(p) for p in PHOTOS], checkpoint, 2, out)
    assert result["steps"] == 2 and result["sources"] == 2
    tuned = torch.load(out, weights_only=True)
    original = torch.load(checkpoint, weights_only=True)["generator"]
    assert tuned["steps"] == 2 and len(tuned["sources"]) == 2
    changed = [k for k, v in tuned["generator"].items()
               if v.is_floating_point() and not torch.equal(v, original[k])]
    assert len(changed) > len(original) // 2


def test_a_photo_without_a_face_is_named(base, tmp_path: Path):
    cfg, checkpoint = base
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 320), (120, 110, 100)).save(blank)
    with pytest.raises(FinetuneError, match="wall.png: no face found"):
        finetune(cfg, [sample_path(PHOTOS[0]), blank], checkpoint, 1, tmp_path / "x.pt")
    with pytest.raises(FinetuneError, match="at least 2 photos"):
        finetune(cfg, [sample_path(PHOTOS[0])], checkpoint, 1, tmp_path / "x.pt")
