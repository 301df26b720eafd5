"""The generators' losses. The aligner's (Appendix A): L1, perceptual (a pretrained network's
features plus discriminator feature matching), identity cosine, and hinge adversarial. The
blender's (Sec. 3.2, Appendix B): L1, perceptual, the two cycle losses of the colour
correspondence, and hinge adversarial. The weights come from params.yaml (``aligner.loss``,
``blender.loss``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.config import AlignerLoss, BlenderLoss
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


@dataclass
class CrossLosses:
    """Cross-identity reenactment terms (beyond the paper): the sources of one person driven by
    another person's target, I_A^x. No frame shows that pair, so only the identity (the
    sources') and the motion (the driver's) can be asked of it, plus realism."""

    identity: Tensor
    motion: Tensor
    adversarial: Tensor
    total: Tensor

    def items(self) -> dict[str, float]:
        return {f"cross_{name}": float(getattr(self, name).detach())
                for name in ("identity", "motion", "adversarial")}


def cross_reenactment_losses(
    cross: Tensor, source_identity: Tensor, cross_motion: Tensor | None,
    driver_motion: Tensor | None,
    weights: AlignerLoss, identity_net: nn.Module, discriminator: nn.Module,
) -> CrossLosses:
    """``cross``: I_A^x [N, 3, H, W]; ``source_identity``: the mean E_id code of each one's
    sources [N, D]; ``cross_motion`` / ``driver_motion``: [E_pose, E_exp] codes of I_A^x and of
    its driver [N, M] (the driver's a fixed target), None without image motion encoders."""
    identity = cosine_distance(identity_net(cross), source_identity).mean()
    motion = (cross.new_zeros(()) if cross_motion is None or driver_motion is None
              else cosine_distance(cross_motion, driver_motion.detach()).mean())
    adversarial = hinge_g(discriminator(cross)[0])
    total = (weights.cross_identity * identity + weights.cross_motion * motion
             + weights.adversarial * adversarial)
    return CrossLosses(identity, motion, adversarial, total)


class CycleTrip(NamedTuple):
    """One colour round trip of the blender's correspondence: an image's colours warped to I_A
    and back onto the same image (heser.nets.correspondence.cycle_back)."""

    back: Tensor  # the colours after the round trip, [B, 3, h, w] (feature size)
    start: Tensor  # the image they left from, [B, 3, H, W]
    valid: Tensor  # [B, 1, h, w]: 1 where the round trip reached a position


def cycle_l1(trip: CycleTrip) -> Tensor:
    """||back - start||_1 (eq. 9-10): the mean absolute error over the valid positions (0 when
    none is), the start image area-averaged to the feature size the trip ran at."""
    start = F.interpolate(trip.start, size=tuple(trip.back.shape[-2:]), mode="area")
    error = (trip.back - start).abs() * trip.valid
    return error.sum() / (trip.valid.sum() * trip.back.shape[1]).clamp(min=1)


@dataclass
class BlenderLosses:
    """Generator-side terms of one step; ``total`` is their weighted sum."""

    l1: Tensor
    perceptual: Tensor
    cycle: Tensor  # F(I_T) -> A -> F(I_T), eq. 9 / 18
    cycle_second: Tensor  # I_T' -> A -> I_T', eq. 10 / 19
    adversarial: Tensor
    total: Tensor

    def items(self) -> dict[str, float]:
        return {name: float(getattr(self, name).detach()) for name in
                ("l1", "perceptual", "cycle", "cycle_second", "adversarial", "total")}


def blender_generator_losses(
    blended: Tensor, target: Tensor, cycle: CycleTrip, cycle_second: CycleTrip,
    fake_logits: Tensor, weights: BlenderLoss, perceptual_net: nn.Module,
) -> BlenderLosses:
    """I_B (``blended``) against I_T (``target``), the two cycles, and D_B's logits on I_B.

    The paper sums the two cycle losses, each weighted by lambda_c (``weights.cycle``): the
    second frame's cycle is a term of its own, not an average with the first.
    """
    l1 = F.l1_loss(blended, target)
    perceptual = feature_l1(perceptual_net(blended), perceptual_net(target))
    cycle_target, cycle_other = cycle_l1(cycle), cycle_l1(cycle_second)
    adversarial = hinge_g(fake_logits)
    total = (weights.l1 * l1 + weights.perceptual * perceptual
             + weights.cycle * (cycle_target + cycle_other) + weights.adversarial * adversarial)
    return BlenderLosses(l1, perceptual, cycle_target, cycle_other, adversarial, total)
