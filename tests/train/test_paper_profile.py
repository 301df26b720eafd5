"""`dvc exp run -S profile=paper` starts on a CPU-only machine without torchvision: the paper
profile's models build (ResNeXt-50 E_por, full-width motion encoders, 64-512 channel
generators), and one training step of each GAN task runs on real faces at batch 1.

Only the image sizes (and K) are cut, so a step takes seconds on a CPU; every architecture
choice of the profile is kept, including its perceptual loss: ImageNet VGG-16 over the whole
image (the paper's VGG-19 cannot be had offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from heser.config import Config
from heser.nets.portrait_encoder import ResNeXtFeatures
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer
from tests.conftest import make_config, read_rgb

FACES = ["images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png",
         "images/dt_woman_F_crop256.png"]
# image sizes only: channels, widths, backbones and levels stay the paper's
SMALL = {"aligner.size": 32, "aligner.k": 2, "aligner.pose.input_size": 32,
         "aligner.expression.input_size": 32, "aligner.train.batch_size": 1,
         "blender.size": 64, "blender.train.batch_size": 1}  # 64: the U-net's smallest size
# the paper's VGG-19 cannot be had offline; the paper profile takes ImageNet VGG-16
CPU = DistInfo(0, 1, torch.device("cpu"))


def _paper(tmp_path: Path, **overrides: object) -> Config:
    return make_config(tmp_path, profile="paper", **overrides)


def _face(name: str) -> torch.Tensor:
    return torch.from_numpy(read_rgb(name).copy()).permute(2, 0, 1).float() / 127.5 - 1


def test_paper_profile_sets_the_paper_architecture(tmp_path: Path):
    cfg = _paper(tmp_path)
    assert cfg.profile == "paper"
    assert cfg.aligner.size == cfg.blender.size == cfg.crop.size == 512
    assert cfg.aligner.portrait.backbone == "resnext50" and cfg.aligner.k == 8
    assert cfg.aligner.generator.max_channels == 512 and cfg.blender.fpn.levels == 4


def test_aligner_step_with_the_paper_networks(tmp_path: Path):
    from heser.train.aligner import AlignerTask

    cfg = _paper(tmp_path, **SMALL)
    torch.manual_seed(0)
    task = AlignerTask(cfg, CPU.device)
    assert isinstance(task.generator.portrait.backbone, ResNeXtFeatures)
    assert task.perceptual_name == "vgg16"
    faces = [_face(name) for name in FACES]
    batch = {"sources": torch.stack(faces[1:])[None], "target": faces[0][None],
             "target_key": ["woman_D__v__000000"]}
    trainer = GanTrainer(task, cfg.aligner.train, CPU)
    before = task.generator.portrait.backbone.net.conv1.weight.detach().clone()
    result = trainer.train_step(batch)
    assert all(np.isfinite(v) for v in result.losses.values()), result.losses
    assert result.fake["image"].shape == (1, 3, 32, 32)
    assert not torch.equal(before, task.generator.portrait.backbone.net.conv1.weight)


def test_blender_step_with_the_paper_networks(tmp_path: Path, face_backend, parser):
    from heser.train.blender import BlenderTask

    images, labels = [], []
    for name in FACES[:2]:
        rgb = read_rgb(name)
        face = face_backend(rgb)[0]
        labels.append(torch.from_numpy(parser(rgb, face.landmarks, face.scheme)))
        images.append(_face(name))
    # I_T and, as I_T', the other person's labelled frame
    batch = {"target": images[0][None], "target_parse": labels[0][None],
             "sources": images[1][None, None], "source_parse": labels[1][None, None],
             "target_key": ["woman_D__v__000000"]}
    cfg = _paper(tmp_path, **SMALL)
    torch.manual_seed(0)
    task = BlenderTask(cfg, CPU.device)
    assert task.perceptual_name == "vgg16"
    result = GanTrainer(task, cfg.blender.train, CPU).train_step(batch)
    assert all(np.isfinite(v) for v in result.losses.values()), result.losses
    assert result.fake["image"].shape == (1, 3, 64, 64)


def test_paper_size_generators_build(tmp_path: Path):
    """The 512-pixel networks build, as the stages' first act; no step is taken here."""
    from heser.nets.aligner import Head2HeadAligner
    from heser.nets.blender import Head2SceneBlender

    cfg = _paper(tmp_path)
    aligner = Head2HeadAligner(cfg.aligner, 128, cfg.root)
    backbone = aligner.portrait.backbone
    # ResNeXt-50 32x4d without its 1000-class layer (2048 x 1000 + 1000)
    assert sum(p.numel() for p in backbone.parameters()) == 25_028_904 - 2_049_000
    blender = Head2SceneBlender(cfg.blender)
    assert sum(p.numel() for p in blender.parameters()) > 0
