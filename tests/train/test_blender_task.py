"""The blender task on real portraits and their real label maps, tiny networks: Fig. 4 inputs,
one GAN step through the region-restricted references, and a Fig. 9 sample grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer
from tests.conftest import make_config, read_rgb

FACES = ["images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png"]
TINY = {"blender.size": 64, "blender.fpn.base_channels": 8, "blender.fpn.max_channels": 16,
        "blender.fpn.out_channels": 16, "blender.unet.base_channels": 8,
        "blender.unet.max_channels": 16, "blender.discriminator.base_channels": 8,
        "blender.discriminator.max_channels": 16, "blender.chunk_size": 64}


@pytest.fixture(scope="module")
def batch(face_backend, parser) -> dict:
    images, labels = [], []
    for name in FACES:
        rgb = read_rgb(name)
        face = face_backend(rgb)[0]
        labels.append(torch.from_numpy(parser(rgb, face.landmarks, face.scheme)))
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    images, labels = torch.stack(images), torch.stack(labels)
    # I_T' = the other person's frame: the cycle only needs a second labelled picture
    return {"target": images, "target_parse": labels, "sources": images.flip(0)[:, None],
            "source_parse": labels.flip(0)[:, None], "target_key": ["a__v__000000",
                                                                     "b__v__000000"]}


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory):
    from heser.train.blender import BlenderTask

    torch.manual_seed(0)
    cfg = make_config(tmp_path_factory.mktemp("blender"), **TINY)
    return BlenderTask(cfg, torch.device("cpu")), cfg


def test_inputs_follow_fig4(task, batch):
    blender, _ = task
    inputs = blender.prepare(batch, step=0)
    head, inpaint = inputs["head_mask"], inputs["inpaint_mask"]
    assert head.shape == inpaint.shape == (2, 1, 64, 64)
    assert not (head * inpaint).any()  # the ring M_A^I lies outside the head M_A^H
    assert torch.equal(inputs["gray_head"] * (1 - head), torch.zeros_like(head))
    inside = (head + inpaint) > 0  # I_T^BG is blank where the head or its ring is
    assert torch.equal(inputs["background"] * inside, torch.zeros_like(inputs["background"]))
    assert torch.equal(inputs["flipped_target"], inputs["target"].flip(-1))
    assert inputs["regions_animated"].shape == (2, 16, 16)
    assert (inputs["regions_animated"] >= 0).any() and (inputs["regions_target"] >= 0).any()


def test_one_step_trains_the_features_through_the_references(task, batch):
    blender, cfg = task
    trainer = GanTrainer(blender, cfg.blender.train, DistInfo(0, 1, torch.device("cpu")))
    before = [p.detach().clone() for p in blender.generator.fpn.parameters()]
    result = trainer.train_step(batch)
    assert all(np.isfinite(v) for v in result.losses.values())
    assert result.losses["cycle"] > 0
    moved = [not torch.equal(a, p) for a, p in zip(before, blender.generator.fpn.parameters())]
    assert all(moved)  # the FPN learns only through the correspondence: it must get gradients
    grid = blender.sample_grid(result.inputs, result.fake)
    assert grid.shape == (2 * 64, 6 * 64, 3) and grid.dtype == np.uint8


def test_config_refuses_a_size_the_unet_cannot_halve(tmp_path: Path):
    from heser.config import ConfigError

    with pytest.raises(ConfigError, match="multiple of 64"):
        make_config(tmp_path, **{"blender.size": 96})
