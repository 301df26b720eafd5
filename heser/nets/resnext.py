"""ResNeXt-50 (32x4d), the paper's portrait-encoder backbone (Sec. 3.1), without torchvision.

The module names follow torchvision's ``resnext50_32x4d`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ..., ``fc``) so that a user's ImageNet state dict of that model loads
unchanged, strictly. The architecture is ResNet v1.5 (Xie et al. 2017): the stride of a stage's
first block sits on its grouped 3x3 convolution, 32 groups of width 4 at the first stage.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

GROUPS = 32
WIDTH_PER_GROUP = 4
EXPANSION = 4  # a bottleneck's output channels over its ``planes``


class Bottleneck(nn.Module):
    """1x1 reduce, grouped 3x3 (carrying the stride), 1x1 expand, plus the shortcut."""

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        width = planes * WIDTH_PER_GROUP // 64 * GROUPS
        out_channels = planes * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, groups=GROUPS, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:  # projection shortcut
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _stage(in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [Bottleneck(in_channels, planes, stride)]
    layers += [Bottleneck(planes * EXPANSION, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNeXt50(nn.Module):
    """Images [B, 3, H, W] (ImageNet-normalised for pretrained weights) -> logits [B, classes],
    or the pooled 2048-d features once :meth:`drop_classifier` has run."""

    out_channels = 512 * EXPANSION

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, blocks=3, stride=1)  # 256 channels out, 1/4 scale
        self.layer2 = _stage(256, 128, blocks=4, stride=2)  # 512, 1/8
        self.layer3 = _stage(512, 256, blocks=6, stride=2)  # 1024, 1/16
        self.layer4 = _stage(1024, 512, blocks=3, stride=2)  # 2048, 1/32
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(self.out_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for the ReLU network (fan-out), unit-gain BatchNorm."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def drop_classifier(self) -> None:
        """Make the network a feature extractor: forward returns the pooled features."""
        self.fc = nn.Identity()

    def forward(self, images: Tensor) -> Tensor:
        h = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return self.fc(torch.flatten(self.avgpool(h), 1))


def load_resnext50(path: Path) -> ResNeXt50:
    """The 1000-class network with the weights of ``path``, a state dict of torchvision's
    ``resnext50_32x4d`` (read with ``weights_only``); any other file is refused, naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ResNeXt-50 ImageNet weights not found "
                                "(aligner.portrait.imagenet_weights)") from None
    except Exception as exc:  # a pickle with code in it, a truncated or foreign file
        raise ValueError(f"{path}: not a readable PyTorch state dict "
                         f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    net = ResNeXt50()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: not a state dict of torchvision's resnext50_32x4d "
                         f"({len(missing)} missing keys {missing[:3]}, {len(unexpected)} "
                         f"unexpected {unexpected[:3]}, {len(shapes)} other shapes {shapes[:3]})")
    net.load_state_dict(state, strict=True)
    return net
