"""BiSeNet face parser: 19 CelebAMask-HQ classes mapped onto the HeSer regions.

The network is the one behind the widely shared "face-parsing.PyTorch" checkpoints
(``79999_iter.pth``, trained on 512x512 CelebAMask-HQ): a ResNet-18 context path with two
attention refinement modules, the stride-8 ResNet feature standing in for the spatial path, a
feature fusion module and three output heads. Module names follow that checkpoint's state-dict
keys (``cp.resnet.layer1.0.conv1.weight``, ``cp.arm16.conv_atten.weight``,
``ffm.convblk.conv.weight``, ``conv_out.conv_out.weight``, ...) so it loads as is.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heser.assets import sha256_file
from heser.face.labels import lookup_table
from heser.face.types import FaceBackendError
from heser.imaging import IMAGENET_MEAN, IMAGENET_STD

INPUT_SIZE = 512  # the checkpoint's training resolution

# What torch.load raises on a truncated, foreign or non-weights-only file.
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, EOFError, KeyError, AttributeError,
                TypeError, ImportError, pickle.UnpicklingError)


# --------------------------------------------------------------------------- building blocks


class ConvBNReLU(nn.Module):
    """Bias-free convolution, batch norm, ReLU (keys ``conv.weight``, ``bn.*``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; ``downsample`` = (1x1 conv, BN) when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


def _stage(cin: int, cout: int, stride: int, blocks: int = 2) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride),
                         *(BasicBlock(cout, cout, 1) for _ in range(blocks - 1)))


class ResNet18(nn.Module):
    """ResNet-18 trunk without the classifier; returns the stride 8, 16 and 32 features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 1)
        self.layer2 = _stage(64, 128, 2)
        self.layer3 = _stage(128, 256, 2)
        self.layer4 = _stage(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return f8, f16, f32


class AttentionRefinementModule(nn.Module):
    """Channel attention from global context: ``feat * sigmoid(bn(conv1x1(avgpool(feat))))``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        weight = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * weight


class ContextPath(nn.Module):
    """Backbone plus top-down refinement; returns (res stride 8, context stride 8, stride 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        glob = self.conv_avg(F.adaptive_avg_pool2d(f32, 1))
        top32 = self.arm32(f32) + glob  # broadcast == nearest upsampling of the 1x1 map
        up32 = self.conv_head32(F.interpolate(top32, size=f16.shape[2:], mode="nearest"))
        top16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(top16, size=f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusionModule(nn.Module):
    """Concatenate, 1x1 ConvBNReLU, then a squeeze-excitation style residual re-weighting."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        weight = F.adaptive_avg_pool2d(feat, 1)
        weight = torch.sigmoid(self.conv2(F.relu(self.conv1(weight))))
        return feat + feat * weight


class BiSeNetOutput(nn.Module):
    """3x3 ConvBNReLU then a bias-free 1x1 classifier (keys ``conv.*``, ``conv_out.weight``)."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet. ``forward`` gives class logits at the input's resolution.

    In training mode it returns ``(main, aux16, aux32)`` (the two auxiliary heads used for deep
    supervision); in eval mode only the main logits.
    """

    def __init__(self, n_classes: int = 19) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor):
        size = x.shape[2:]
        f8, ctx8, ctx16 = self.cp(x)
        main = self._up(self.conv_out(self.ffm(f8, ctx8)), size)
        if not self.training:
            return main
        return main, self._up(self.conv_out16(ctx8), size), self._up(self.conv_out32(ctx16), size)

    @staticmethod
    def _up(logits: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------- checkpoint loading


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _extract_state_dict(obj) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint (plain, ``{"state_dict": ...}`` or DDP)."""
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model", "net"):
            inner = obj.get(wrapper)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj:
        raise FaceBackendError(f"expected a state dict, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = str(key)
        state[key.removeprefix("module.")] = value
    return state


def _few(keys, n: int = 5) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_bisenet(checkpoint: Path, device: str = "cpu", n_classes: int = 19) -> BiSeNet:
    """A :class:`BiSeNet` in eval mode with the weights of ``checkpoint``.

    Raises :class:`FaceBackendError` when the file is missing, unreadable or does not hold this
    network's weights (with a few of the missing / unexpected / mis-shaped keys).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FaceBackendError(
            f"BiSeNet checkpoint not found: {path}. Put the face-parsing.PyTorch weights "
            "(79999_iter.pth) there, point parse.bisenet_checkpoint at them, or use "
            "parse.backend: mediapipe, the offline default.")
    try:
        raw = torch.load(path, map_location=device, weights_only=True)
    except _LOAD_ERRORS as exc:
        raise FaceBackendError(
            f"cannot read BiSeNet checkpoint {path}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    try:
        state = _extract_state_dict(raw)
    except FaceBackendError as exc:
        raise FaceBackendError(f"BiSeNet checkpoint {path}: {exc}") from None

    model = BiSeNet(n_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_few(shapes, 3)}")
        raise FaceBackendError(
            f"{path} is not a {n_classes}-class face-parsing BiSeNet checkpoint: "
            + "; ".join(parts))
    for key, value in expected.items():  # old checkpoints predate the BN batch counters
        if key not in state:
            state[key] = value
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


# --------------------------------------------------------------------------- the parser


class BiSeNetParser:
    """``FaceParser`` "bisenet": aligned RGB crops -> HeSer label maps (uint8, crop's HxW)."""

    name = "bisenet"

    def __init__(self, checkpoint: Path, device: str = "cpu", batch_size: int = 8) -> None:
        self.checkpoint = Path(checkpoint)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.model = load_bisenet(self.checkpoint, device)
        self.lut = lookup_table("bisenet19")
        if len(self.lut) != self.model.n_classes:
            raise FaceBackendError(f"label table bisenet19 has {len(self.lut)} classes, "
                                   f"the network {self.model.n_classes}")
        self.version = f"bisenet19-{sha256_file(self.checkpoint)[:12]}"
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    def __call__(self, crop_rgb: np.ndarray, landmarks: np.ndarray | None = None,
                 scheme: str | None = None) -> np.ndarray:
        """Label map of one crop; the landmarks are not needed by this parser."""
        crop = np.asarray(crop_rgb)
        if crop.ndim != 3:
            raise ValueError(f"expected an HxWx3 RGB crop, got shape {crop.shape}")
        return self.parse_batch(crop[None])[0]

    def parse_batch(self, crops: np.ndarray) -> np.ndarray:
        """``N x H x W x 3`` uint8 RGB crops -> ``N x H x W`` uint8 HeSer label maps."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[3] not in (3, 4):
            raise ValueError(f"expected N x H x W x 3 RGB crops, got shape {crops.shape}")
        n, height, width = crops.shape[:3]
        out = np.zeros((n, height, width), dtype=np.uint8)
        if n == 0 or height == 0 or width == 0:
            return out
        interp = cv2.INTER_AREA if min(height, width) > INPUT_SIZE else cv2.INTER_LINEAR
        for start in range(0, n, self.batch_size):
            chunk = crops[start:start + self.batch_size, :, :, :3]
            if chunk.dtype != np.uint8:
                chunk = np.clip(chunk, 0, 255).astype(np.uint8)
            resized = np.stack([
                img if (height, width) == (INPUT_SIZE, INPUT_SIZE)
                else cv2.resize(img, (INPUT_SIZE, INPUT_SIZE), interpolation=interp)
                for img in chunk])
            classes = self._classes(resized)
            labels = self.lut[classes]
            for i, lab in enumerate(labels):
                if (height, width) != (INPUT_SIZE, INPUT_SIZE):
                    lab = cv2.resize(lab, (width, height), interpolation=cv2.INTER_NEAREST)
                out[start + i] = lab
        return out

    @torch.inference_mode()
    def _classes(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        x = (x - self._mean) / self._std
        logits = self.model(x)
        return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
