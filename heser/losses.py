"""The aligner's losses (Appendix A): L1, perceptual (a pretrained network's features plus
discriminator feature matching), identity cosine, and hinge adversarial. The weights come from
params.yaml (``aligner.loss``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.config import AlignerLoss
from heser.nets.identity import cosine_distance


def feature_l1(fake: list[Tensor], real: list[Tensor]) -> Tensor:
    """Mean L1 over a list of feature maps; the real side is a fixed target."""
    return torch.stack([F.l1_loss(f, r.detach()) for f, r in zip(fake, real)]).mean()


def hinge_d(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()


@dataclass
class AlignerLosses:
    """Generator-side terms of one step; ``total`` is their weighted sum."""

    l1: Tensor
    perceptual: Tensor
    feature_matching: Tensor
    identity: Tensor
    adversarial: Tensor
    total: Tensor

    def items(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in
                ("l1", "perceptual", "feature_matching", "identity", "adversarial", "total")}


def aligner_generator_losses(
    animated: Tensor, target: Tensor, weights: AlignerLoss, perceptual_net: nn.Module,
    identity_net: nn.Module, discriminator: nn.Module,
) -> AlignerLosses:
    """All terms comparing I_A (``animated``) with I_T (``target``)."""
    l1 = F.l1_loss(animated, target)
    perceptual = feature_l1(perceptual_net(animated), perceptual_net(target))
    fake_logits, fake_features = discriminator(animated)
    with torch.no_grad():
        _, real_features = discriminator(target)
    matching = feature_l1(fake_features, real_features)
    identity = cosine_distance(identity_net(animated), identity_net(target)).mean()
    adversarial = hinge_g(fake_logits)
    total = (weights.l1 * l1 + weights.perceptual * perceptual
             + weights.feature_matching * matching + weights.identity * identity
             + weights.adversarial * adversarial)
    return AlignerLosses(l1, perceptual, matching, identity, adversarial, total)
