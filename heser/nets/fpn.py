"""The feature pyramid of Semantic-Guided Color Reference Creation (Sec. 3.2, Appendix B).

It embeds I_T and I_A into features whose correlation gives the correspondence from which the
head colour reference I^HR is warped. A residual encoder builds ``levels`` scales from 1/4 down
to 1/2^(levels+1) of the input; a top-down pathway (Lin et al., FPN) adds each coarser level,
upsampled, to the finer level's 1x1 lateral, and a 3x3 conv smooths the sum at 1/4, the one
resolution where correlation is computed.

No normalisation layer: the correlation normalises the features itself, and per-sample layers
only keep a data-parallel split equal to the whole batch. No spectral norm either: this network
is trained through the correspondence, not by an adversary.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import ResDown, channel_ladder, conv1x1, conv3x3


class FeaturePyramid(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> fused features [B, out_channels, H/4, W/4]."""

    def __init__(self, base_channels: int, max_channels: int, levels: int, out_channels: int):
        super().__init__()
        if levels < 1:
            raise ValueError(f"a feature pyramid needs at least one level, got {levels}")
        # levels + 1 halvings: two to reach 1/4 (the first pyramid level), one per extra level
        widths = channel_ladder(base_channels, max_channels, levels + 1)
        self.downsamplings = len(widths)
        self.encoder = nn.ModuleList([ResDown(3, widths[0], spectral=False, first=True)] + [
            ResDown(cin, cout, spectral=False) for cin, cout in zip(widths[:-1], widths[1:])])
        self.laterals = nn.ModuleList(conv1x1(w, out_channels, spectral=False)
                                      for w in widths[1:])
        self.smooth = conv3x3(out_channels, out_channels, spectral=False)

    def forward(self, images: Tensor) -> Tensor:
        factor = 2**self.downsamplings
        if images.shape[-2] % factor or images.shape[-1] % factor:
            raise ValueError(f"feature pyramid input {tuple(images.shape[-2:])} is not "
                             f"divisible by {factor} (2^(levels + 1))")
        h, scales = images, []
        for block in self.encoder:
            h = block(h)
            scales.append(h)
        # scales[0] is at 1/2, only a stepping stone; the pyramid is scales[1:] (1/4, 1/8, ...)
        top_down = self.laterals[-1](scales[-1])
        for lateral, feature in zip(self.laterals[-2::-1], scales[-2:0:-1]):
            top_down = lateral(feature) + F.interpolate(top_down, scale_factor=2.0,
                                                        mode="nearest")
        return self.smooth(top_down)
