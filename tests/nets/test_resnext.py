"""ResNeXt-50 (32x4d) in torchvision's state-dict layout: the names and shapes of every tensor,
the parameter count torchvision documents, loading a saved state dict strictly, and the clear
errors for files that are not one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heser.nets.resnext import ResNeXt50, load_resnext50

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(name: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{name}.{p}", () if p == "num_batches_tracked" else (channels,)) for p in BN]


def _expected_layout() -> list[tuple[str, tuple[int, ...]]]:
    """torchvision's resnext50_32x4d state dict, written from the architecture: stages of
    (planes, blocks), a block 1x1 -> grouped 3x3 (32 groups of 4 * planes / 64 channels: the
    "4d" is the first stage's) -> 1x1 to 4 * planes, the first block of each stage with a
    projection shortcut."""
    rows = [("conv1.weight", (64, 3, 7, 7)), *_bn("bn1", 64)]
    cin = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        width, groups_of, cout = planes * 2, planes // 16, planes * 4
        for block in range(blocks):
            name = f"layer{stage}.{block}"
            rows += [(f"{name}.conv1.weight", (width, cin, 1, 1)), *_bn(f"{name}.bn1", width),
                     (f"{name}.conv2.weight", (width, groups_of, 3, 3)), *_bn(f"{name}.bn2", width),
                     (f"{name}.conv3.weight", (cout, width, 1, 1)), *_bn(f"{name}.bn3", cout)]
            if block == 0:
                rows += [(f"{name}.downsample.0.weight", (cout, cin, 1, 1)),
                         *_bn(f"{name}.downsample.1", cout)]
            cin = cout
    return rows + [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]


@pytest.fixture(scope="module")
def net() -> ResNeXt50:
    torch.manual_seed(0)
    return ResNeXt50()


def test_state_dict_layout_is_torchvisions(net: ResNeXt50):
    got = [(name, tuple(t.shape)) for name, t in net.state_dict().items()]
    assert got == _expected_layout()
    assert len(got) == 320
    assert dict(got)["layer1.0.conv2.weight"] == (128, 4, 3, 3)  # 32 groups x 4 channels
    assert dict(got)["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1)


def test_parameter_count_is_torchvisions(net: ResNeXt50):
    # torchvision's documented figure for resnext50_32x4d (IMAGENET1K_V1 / V2): 25,028,904
    assert sum(p.numel() for p in net.parameters()) == 25_028_904


def test_forward_shapes_and_features(net: ResNeXt50):
    net.eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert net(images).shape == (2, 1000)
        features = ResNeXt50()
        features.drop_classifier()
        assert features.eval()(images).shape == (2, ResNeXt50.out_channels) == (2, 2048)


def test_saved_state_dict_loads_strictly_and_computes_the_same(net: ResNeXt50, tmp_path: Path):
    for module in net.modules():  # non-trivial BatchNorm statistics, so they must travel too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnext50_32x4d.pth"
    torch.save(net.state_dict(), path)
    loaded = load_resnext50(path)
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images), net.eval()(images), rtol=0, atol=0)


def test_other_files_are_refused_naming_the_file(net: ResNeXt50, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pth: ResNeXt-50 ImageNet weights"):
        load_resnext50(tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"garbage\.pth: not a readable PyTorch state dict"):
        load_resnext50(garbage)
    state = net.state_dict()
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, headless)
    with pytest.raises(ValueError, match=r"headless\.pth: .*2 missing keys \['fc.bias'"):
        load_resnext50(headless)
    wide = tmp_path / "wide.pth"
    torch.save({**state, "fc.weight": torch.zeros(10, 2048), "fc.bias": torch.zeros(10)}, wide)
    with pytest.raises(ValueError, match=r"wide\.pth: .*2 other shapes \['fc.weight \(10, 2048\)"):
        load_resnext50(wide)
    prefixed = tmp_path / "prefixed.pth"  # e.g. saved from a DataParallel wrapper
    torch.save({f"module.{k}": v for k, v in state.items()}, prefixed)
    with pytest.raises(ValueError, match=r"prefixed\.pth: not a state dict of torchvision's"):
        load_resnext50(prefixed)
