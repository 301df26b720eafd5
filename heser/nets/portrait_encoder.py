"""E_por: the portrait encoder of the Head2Head Aligner (Sec. 3.1).

It embeds each source image into a 512-d appearance code (head shape, hair, identity details the
face-recognition code misses); the K codes are averaged (eq. 1). The paper uses ResNeXt-50: the
``resnext50`` backbone is our own (heser.nets.resnext), ImageNet-initialised from a torchvision
``resnext50_32x4d`` state dict when one is given. The ``resnet`` backbone is a small residual
CNN for CPU training, its width set in params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.imaging import IMAGENET_MEAN, IMAGENET_STD, to_unit
from heser.nets.blocks import ResDown, channel_ladder, sn
from heser.nets.resnext import ResNeXt50, load_resnext50


class SmallResNet(nn.Module):
    """Stem + ``stages`` residual downsampling blocks + global average pooling."""

    def __init__(self, width: int, stages: int, max_channels: int, spectral: bool):
        super().__init__()
        widths = channel_ladder(width, max_channels, stages)
        self.stem = ResDown(3, widths[0], spectral, first=True)
        self.stages = nn.Sequential(*(ResDown(cin, cout, spectral)
                                      for cin, cout in zip(widths[:-1], widths[1:])))
        self.out_channels = widths[-1]

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.stages(self.stem(x)))
        return h.mean(dim=(2, 3))


class ResNeXtFeatures(nn.Module):
    """ResNeXt-50's pooled 2048-d features of images in [-1, 1], given to it as ImageNet
    input (the statistics its pretrained weights were trained on)."""

    def __init__(self, imagenet_weights: Path | None):
        super().__init__()
        self.net = ResNeXt50() if imagenet_weights is None else load_resnext50(imagenet_weights)
        self.net.drop_classifier()
        self.out_channels = self.net.out_channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.net((to_unit(images) - self.mean) / self.std)


class PortraitEncoder(nn.Module):
    """Source images [B, 3, H, W] in [-1, 1] -> portrait codes [B, dim] (e_por)."""

    def __init__(self, backbone: str, dim: int, width: int, stages: int, max_channels: int,
                 imagenet_weights: Path | None = None, spectral: bool = False):
        super().__init__()
        if backbone == "resnext50":
            self.backbone = ResNeXtFeatures(imagenet_weights)
        else:
            self.backbone = SmallResNet(width, stages, max_channels, spectral)
        self.head = sn(nn.Linear(self.backbone.out_channels, dim), spectral)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def average(self, sources: Tensor) -> Tensor:
        """[B, K, 3, H, W] -> [B, dim]: the K-shot average of eq. 1."""
        batch, k = sources.shape[:2]
        return self(sources.flatten(0, 1)).view(batch, k, -1).mean(dim=1)
