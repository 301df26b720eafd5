"""E_id: the frozen face-recognition encoder, on the central crop C of a head crop.

The offline default is dlib's 128-d ResNet (``heser.nets.identity_dlib``, weights from the PyPI
package face-recognition-models). Our crops are FFHQ-style windows widened to the whole head,
so the central ``crop`` fraction of the side holds about the face area of a dlib chip.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from heser.config import IdentityNet
from heser.data.augment import central_crop
from heser.nets.blocks import to_255

DLIB_CHIP = 150


class DlibIdentity(nn.Module):
    """Images [B, 3, H, W] in [-1, 1] -> identity codes [B, 128]; frozen."""

    dim = 128

    def __init__(self, crop: float):
        super().__init__()
        from heser.nets.identity_dlib import load_dlib_resnet

        self.crop = crop
        self.net = load_dlib_resnet()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DlibIdentity:
        return super().train(False)  # frozen: never leaves eval mode

    def chips(self, images: Tensor) -> Tensor:
        return to_255(central_crop(images, self.crop, DLIB_CHIP))

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self.chips(images))

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """The residual stages' outputs: the offline perceptual-loss features."""
        return self.net.feature_maps(self.chips(images))


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """1 - cos(a, b) per row: the identity loss and the E_ID metric."""
    return 1 - F.cosine_similarity(a, b, dim=1)


def make_identity_encoder(cfg: IdentityNet) -> DlibIdentity:
    return DlibIdentity(cfg.crop)  # the one backend so far (config restricts it to dlib)
