"""ArcFace IR-SE50: the face-recognition network the paper's E_id is (512-d, 112x112 input).

Its weights cannot be had offline, so this backend loads a user-supplied checkpoint: the state
dict layout of the widely used InsightFace PyTorch port (``input_layer``, ``body.<n>`` with
``shortcut_layer`` / ``res_layer``, ``output_layer``), e.g. ``model_ir_se50.pth``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (in channels, depth, units) of the four stages of the 50-layer network; the first unit of
# each stage has stride 2.
STAGES_50 = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
INPUT_SIZE = 112


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class BottleneckIRSE(nn.Module):
    """BN-conv-PReLU-conv(stride)-BN-SE, plus a (strided) identity or 1x1 projection."""

    def __init__(self, cin: int, depth: int, stride: int):
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if cin == depth else nn.Sequential(
            nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth),
            SqueezeExcite(depth))

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """Faces [B, 3, 112, 112] in [-1, 1] (RGB) -> L2-normalised embeddings [B, 512]."""

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(64), nn.PReLU(64))
        units = [BottleneckIRSE(cin if i == 0 else depth, depth, 2 if i == 0 else 1)
                 for cin, depth, count in STAGES_50 for i in range(count)]
        self.body = nn.Sequential(*units)
        self.stage_ends = tuple(sum(count for *_, count in STAGES_50[: i + 1]) - 1
                                for i in range(len(STAGES_50)))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))

    def feature_maps(self, faces: Tensor) -> list[Tensor]:
        h, maps = self.input_layer(faces), []
        for index, unit in enumerate(self.body):
            h = unit(h)
            if index in self.stage_ends:
                maps.append(h)
        return maps

    def forward(self, faces: Tensor) -> Tensor:
        return F.normalize(self.output_layer(self.feature_maps(faces)[-1]), dim=1)


def load_irse50(path: Path) -> IRSE50:
    """The network with a user checkpoint's weights, frozen, in eval mode; a checkpoint of
    another layout is refused with the keys that differ."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: ArcFace IR-SE50 checkpoint not found "
                                "(aligner.identity.checkpoint)") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    net = IRSE50()
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes
        raise ValueError(f"{path}: tensor shapes differ from IR-SE50's: {exc}") from None
    if missing or unexpected:
        raise ValueError(f"{path}: not an IR-SE50 state dict of the InsightFace PyTorch layout "
                         f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return net.eval().requires_grad_(False)
