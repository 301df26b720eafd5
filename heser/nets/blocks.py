"""Layers shared by the networks: spectral-norm convolutions, AdaIN, residual blocks.

The paper applies spectral normalisation everywhere (Appendix A), as latent pose descriptors
(LPD) do; ``sn()`` wraps a layer with torch's parametrisation so the weight stays a plain
parameter in checkpoints.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def sn(layer: nn.Module, enabled: bool = True) -> nn.Module:
    return spectral_norm(layer) if enabled else layer


def conv3x3(cin: int, cout: int, spectral: bool = True, stride: int = 1) -> nn.Module:
    return sn(nn.Conv2d(cin, cout, 3, stride, 1), spectral)


def conv1x1(cin: int, cout: int, spectral: bool = True) -> nn.Module:
    return sn(nn.Conv2d(cin, cout, 1), spectral)


class AdaIN(nn.Module):
    """Adaptive instance norm: per-sample scale and bias from the style vector (LPD, HeSer's
    G_A). The parameters arrive from the MLP; ``n_params`` says how many this layer takes."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.norm = nn.InstanceNorm2d(channels, affine=False)

    @property
    def n_params(self) -> int:
        return 2 * self.channels

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        scale, bias = params.view(-1, 2, self.channels, 1, 1).unbind(1)
        return self.norm(x) * (1 + scale) + bias


class AdaINResUp(nn.Module):
    """Residual upsampling block of the style generator: AdaIN-ReLU-up-conv-AdaIN-ReLU-conv,
    with a nearest-upsampled 1x1 skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.norm2 = AdaIN(cin), AdaIN(cout)
        self.conv1, self.conv2 = conv3x3(cin, cout), conv3x3(cout, cout)
        self.skip = conv1x1(cin, cout)

    @property
    def n_params(self) -> int:
        return self.norm1.n_params + self.norm2.n_params

    def forward(self, x: Tensor, params: Tensor) -> Tensor:
        p1, p2 = params.split([self.norm1.n_params, self.norm2.n_params], dim=1)
        h = F.interpolate(F.relu(self.norm1(x, p1)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h), p2)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResDown(nn.Module):
    """Residual downsampling block (discriminator and encoders): ReLU-conv-ReLU-conv-avgpool,
    with an average-pooled 1x1 skip. ``first`` skips the leading ReLU on raw pixels."""

    def __init__(self, cin: int, cout: int, spectral: bool = True, first: bool = False):
        super().__init__()
        self.first = first
        self.conv1, self.conv2 = conv3x3(cin, cout, spectral), conv3x3(cout, cout, spectral)
        self.skip = conv1x1(cin, cout, spectral)

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """Per-sample normalisation: unlike batch norm, a data-parallel step on split batches
    computes exactly what one process does on the whole batch."""
    return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)


class InvertedResidual(nn.Module):
    """MobileNetV2's block (1x1 expand, 3x3 depthwise, 1x1 linear projection; Sandler et al.),
    with group norm in place of batch norm (see ``group_norm``)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, spectral: bool = True):
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.block = nn.Sequential(
            sn(nn.Conv2d(cin, hidden, 1, bias=False), spectral), group_norm(hidden),
            nn.ReLU6(inplace=True),
            sn(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), spectral),
            group_norm(hidden), nn.ReLU6(inplace=True),
            sn(nn.Conv2d(hidden, cout, 1, bias=False), spectral), group_norm(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_skip else out


def channel_ladder(base: int, maximum: int, steps: int) -> list[int]:
    """Channel widths doubling from ``base`` and capped at ``maximum``: [base, 2 base, ...]."""
    return [min(base * 2**i, maximum) for i in range(steps)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class CodeBatchNorm(nn.BatchNorm1d):
    """Codes [B, D] standardised per feature over the batch (running statistics at inference),
    without an affine part. A one-code batch in training (one-photo fine-tuning, one episode per
    process) uses the running statistics rather than failing."""

    def __init__(self, dim: int):
        super().__init__(dim, affine=False)

    def forward(self, codes: Tensor) -> Tensor:
        if self.training and codes.shape[0] == 1:
            return F.batch_norm(codes, self.running_mean, self.running_var, training=False,
                                eps=self.eps)
        return super().forward(codes)
