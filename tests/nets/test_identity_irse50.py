"""The ArcFace IR-SE50 backend: architecture, checkpoint loading and its errors.

Real IR-SE50 weights are not obtainable offline, so these tests check the network's layout and
the loader with a state dict of the same layout (the public checkpoints' key names)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heser.config import IdentityNet
from heser.nets.identity import make_identity_encoder
from heser.nets.identity_irse50 import IRSE50, load_irse50


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("irse50") / "model_ir_se50.pth"
    torch.save(IRSE50().state_dict(), path)
    return path


def test_layout_matches_the_public_checkpoints(checkpoint: Path):
    keys = torch.load(checkpoint, weights_only=True).keys()
    assert {"input_layer.0.weight", "body.0.res_layer.5.fc1.weight",
            "body.3.shortcut_layer.0.weight", "body.23.res_layer.4.running_var",
            "output_layer.3.weight", "output_layer.4.running_mean"} <= set(keys)
    assert sum(k.endswith("res_layer.1.weight") for k in keys) == 24  # 3 + 4 + 14 + 3 units


def test_loaded_network_embeds_and_exposes_stage_features(checkpoint: Path):
    net = load_irse50(checkpoint)
    faces = torch.rand(2, 3, 112, 112) * 2 - 1
    codes = net(faces)
    assert codes.shape == (2, 512)
    torch.testing.assert_close(codes.norm(dim=1), torch.ones(2))
    assert [m.shape[1:] for m in net.feature_maps(faces)] == [
        (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert not any(p.requires_grad for p in net.parameters())


def test_wrong_checkpoints_are_named(tmp_path: Path, checkpoint: Path):
    with pytest.raises(FileNotFoundError, match="IR-SE50 checkpoint not found"):
        load_irse50(tmp_path / "absent.pth")
    state = torch.load(checkpoint, weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other.pth: not an IR-SE50 .*extra.weight"):
        load_irse50(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable"):
        load_irse50(tmp_path / "junk.pth")


def test_arcface_identity_encoder_takes_central_crops(checkpoint: Path):
    encoder = make_identity_encoder(IdentityNet(backend="arcface", checkpoint=checkpoint,
                                                crop=0.55))
    images = torch.rand(2, 3, 128, 128) * 2 - 1
    assert encoder.dim == 512 and encoder(images).shape == (2, 512)
    assert encoder.chips(images).shape == (2, 3, 112, 112)
    encoder.train()
    assert not encoder.training  # frozen: stays in eval mode
