"""E_por: the portrait encoder of the Head2Head Aligner (Sec. 3.1).

It embeds each source image into a 512-d appearance code (head shape, hair, identity details the
face-recognition code misses); the K codes are averaged (eq. 1). The paper uses ResNeXt-50: the
``resnext50`` backbone takes torchvision's, ImageNet-initialised when its weights file is given.
The ``resnet`` backbone is a small residual CNN for CPU training, its width set in params.yaml.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import ResDown, channel_ladder


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


def _resnext50(imagenet_weights: Path | None) -> tuple[nn.Module, int]:
    try:
        from torchvision.models import resnext50_32x4d
    except ImportError as exc:  # the CPU install has no torchvision
        raise RuntimeError("aligner.portrait.backbone 'resnext50' needs torchvision "
                           "(pip install torchvision==0.28.0 with the PyPI torch 2.13.0)") from exc
    net = resnext50_32x4d()
    if imagenet_weights is not None:
        net.load_state_dict(torch.load(imagenet_weights, map_location="cpu", weights_only=True))
    channels = net.fc.in_features
    net.fc = nn.Identity()
    return net, channels


class PortraitEncoder(nn.Module):
    """Source images [B, 3, H, W] in [-1, 1] -> portrait codes [B, dim] (e_por)."""

    def __init__(self, backbone: str, dim: int, width: int, stages: int, max_channels: int,
                 imagenet_weights: Path | None = None):
        super().__init__()
        if backbone == "resnext50":
            self.backbone, channels = _resnext50(imagenet_weights)
        else:
            self.backbone = SmallResNet(width, stages, max_channels, spectral=True)
            channels = self.backbone.out_channels
        self.head = nn.utils.parametrizations.spectral_norm(nn.Linear(channels, dim))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def average(self, sources: Tensor) -> Tensor:
        """[B, K, 3, H, W] -> [B, dim]: the K-shot average of eq. 1."""
        batch, k = sources.shape[:2]
        return self(sources.flatten(0, 1)).view(batch, k, -1).mean(dim=1)
