"""E_pose and E_exp: the pose and expression encoders of the aligner (Sec. 3.1).

Both are MobileNetV2-style networks (the paper's choice), small on purpose: the pose encoder
sees the augmented target A(I_T) and the expression encoder its central crop C(A(I_T)), so that
together with a narrow code (256-d each) they carry motion, not appearance (as in LPD).
"""

from __future__ import annotations

from torch import Tensor, nn

from heser.nets.blocks import InvertedResidual, group_norm, sn

# (expansion, output channels at width 1, blocks, first stride): MobileNetV2's table, cut after
# the 96-channel stage since a motion code needs far less capacity than ImageNet.
_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width / 8)) * 8)


class MotionEncoder(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> a code [B, dim] (e_pose or e_exp)."""

    def __init__(self, dim: int, width: float, spectral: bool = False):
        super().__init__()
        channels = _scaled(32, width)
        layers: list[nn.Module] = [sn(nn.Conv2d(3, channels, 3, 2, 1, bias=False), spectral),
                                   group_norm(channels), nn.ReLU6(inplace=True)]
        for expand, cout, blocks, stride in _STAGES:
            cout = _scaled(cout, width)
            for i in range(blocks):
                layers.append(InvertedResidual(channels, cout, stride if i == 0 else 1, expand,
                                                spectral))
                channels = cout
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Linear(channels, dim), spectral)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))
