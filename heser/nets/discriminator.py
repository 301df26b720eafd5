"""The spectral-norm hinge discriminator of the aligner (D_A, Appendix A).

A residual downsampling CNN from the image size to 4x4, then a linear logit. It also returns
every block's features: the perceptual loss includes feature matching on them (as in LPD).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import ResDown, channel_ladder, sn


class Discriminator(nn.Module):
    """Images [B, 3, size, size] in [-1, 1] -> (logits [B], features per block)."""

    def __init__(self, size: int, base_channels: int, max_channels: int):
        super().__init__()
        downs = int(math.log2(size // 4))
        widths = channel_ladder(base_channels, max_channels, downs)
        self.blocks = nn.ModuleList([ResDown(3, widths[0], first=True)] + [
            ResDown(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])])
        self.logit = sn(nn.Linear(widths[-1], 1))

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        features, h = [], images
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return self.logit(F.relu(h).sum(dim=(2, 3))).squeeze(1), features
