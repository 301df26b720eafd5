"""G_A's renderer: the AdaIN style generator of latent pose descriptors (LPD), used by HeSer to
draw the animated portrait I_A from the concatenated codes (Sec. 3.1, Appendix A).

A learned constant at ``start_size`` is upsampled by residual AdaIN blocks to the output size;
all per-sample information enters through the AdaIN parameters that ``AdaINMLP`` predicts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import AdaINResUp, channel_ladder, conv3x3, sn


class StyleGenerator(nn.Module):
    """AdaIN parameters [B, n_params] -> image [B, 3, size, size] in [-1, 1] (I_A)."""

    def __init__(self, size: int, start_size: int, base_channels: int, max_channels: int):
        super().__init__()
        ups = int(math.log2(size // start_size))
        if start_size * 2**ups != size:
            raise ValueError(f"generator size {size} is not start_size {start_size} x 2^n")
        widths = channel_ladder(base_channels, max_channels, ups + 1)[::-1]
        self.constant = nn.Parameter(torch.randn(1, widths[0], start_size, start_size))
        self.blocks = nn.ModuleList(AdaINResUp(cin, cout)
                                    for cin, cout in zip(widths[:-1], widths[1:]))
        self.to_rgb = conv3x3(widths[-1], 3)

    @property
    def n_params(self) -> int:
        return sum(block.n_params for block in self.blocks)

    def forward(self, adain_params: Tensor) -> Tensor:
        h = self.constant.expand(adain_params.shape[0], -1, -1, -1)
        for block, params in zip(self.blocks, adain_params.split(
                [b.n_params for b in self.blocks], dim=1)):
            h = block(h, params)
        return torch.tanh(self.to_rgb(F.relu(h)))


class AdaINMLP(nn.Module):
    """The 2-layer MLP (hidden 768 in the paper) from [e_por, e_id, e_pose, e_exp] to the
    generator's AdaIN parameters; spectral-normalised as in the paper unless ``spectral`` is
    False."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, spectral: bool = True):
        super().__init__()
        self.net = nn.Sequential(sn(nn.Linear(in_dim, hidden), spectral), nn.ReLU(inplace=True),
                                 sn(nn.Linear(hidden, out_dim), spectral))

    def forward(self, codes: Tensor) -> Tensor:
        return self.net(codes)
