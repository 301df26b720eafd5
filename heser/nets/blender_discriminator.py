"""D_B, the Head2Scene Blender's mask-conditioned discriminator (eq. 20-21, Appendix B).

The aligner's spectral-norm hinge discriminator, but it sees the image concatenated with the
masks it is conditioned on (M_A^H and M_A^I): whether a blend is real depends on where the
head and the inpainted region are. Residual downsampling to 4x4, then a linear logit; every
block's features come back for feature matching, as in ``heser.nets.discriminator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import ResDown, channel_ladder, sn


class MaskConditionedDiscriminator(nn.Module):
    """(images [B, 3, size, size] in [-1, 1], conditions [B, condition_channels, size, size])
    -> (logits [B], features per block)."""

    def __init__(self, size: int, base_channels: int, max_channels: int,
                 condition_channels: int = 2):
        super().__init__()
        downs = int(math.log2(size // 4))
        if 4 * 2**downs != size:
            raise ValueError(f"discriminator size {size} is not 4 x 2^n")
        self.condition_channels = condition_channels
        widths = channel_ladder(base_channels, max_channels, downs)
        self.blocks = nn.ModuleList([ResDown(3 + condition_channels, widths[0], first=True)] + [
            ResDown(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])])
        self.logit = sn(nn.Linear(widths[-1], 1))

    def forward(self, images: Tensor, conditions: Tensor) -> tuple[Tensor, list[Tensor]]:
        expected = (images.shape[0], self.condition_channels, *images.shape[2:])
        if tuple(conditions.shape) != expected:
            raise ValueError(f"conditions have shape {tuple(conditions.shape)}, "
                             f"expected {expected}")
        features, h = [], torch.cat([images, conditions], dim=1)
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return self.logit(F.relu(h).sum(dim=(2, 3))).squeeze(1), features
