"""E_id: the frozen face-recognition encoder, on the central crop C of a head crop.

Two backends: dlib's 128-d ResNet (offline default; ``heser.nets.identity_dlib``, weights from
the PyPI package face-recognition-models) and ArcFace IR-SE50 (512-d, the paper's; a
user-supplied checkpoint, ``heser.nets.identity_irse50``). Our crops are FFHQ-style windows
widened to the whole head, so the central ``crop`` fraction of the side holds about the face
area each network was trained on.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from heser.config import IdentityNet
from heser.data.augment import central_crop
from heser.imaging import to_255


class FrozenIdentity(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> identity codes [B, dim]; never trained."""

    def __init__(self, net: nn.Module, backend: str, dim: int, crop: float, chip_size: int,
                 pixels_0_255: bool):
        super().__init__()
        self.net, self.backend, self.dim = net, backend, dim
        self.crop, self.chip_size, self.pixels_0_255 = crop, chip_size, pixels_0_255
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenIdentity:
        return super().train(False)  # frozen: never leaves eval mode

    def chips(self, images: Tensor) -> Tensor:
        """C(images) at the network's input size and value range."""
        chips = central_crop(images, self.crop, self.chip_size)
        return to_255(chips) if self.pixels_0_255 else chips

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self.chips(images))

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """The residual stages' outputs: the offline perceptual-loss features."""
        return self.net.feature_maps(self.chips(images))


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cos(a, b) per row: the identity loss and the E_ID metric."""
    return 1 - F.cosine_similarity(a, b, dim=1)


def make_identity_encoder(cfg: IdentityNet, root: Path = Path(".")) -> FrozenIdentity:
    if cfg.backend == "arcface":
        from heser.nets.identity_irse50 import INPUT_SIZE, load_irse50

        # IR-SE50 takes [-1, 1] RGB at 112 px and gives 512-d codes
        return FrozenIdentity(load_irse50(root / cfg.checkpoint), "arcface", 512, cfg.crop,
                              INPUT_SIZE, pixels_0_255=False)
    from heser.nets.identity_dlib import CHIP_SIZE, load_dlib_resnet

    # dlib's ResNet takes 0..255 RGB at 150 px and gives 128-d codes
    return FrozenIdentity(load_dlib_resnet(), "dlib", 128, cfg.crop, CHIP_SIZE,
                          pixels_0_255=True)
