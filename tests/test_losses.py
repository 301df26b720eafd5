"""heser.losses on small constructed tensors whose value each test works out by hand: the hinge
terms (values and signs), L1, perceptual and feature matching (feature L1 with tiny known
networks), identity cosine, the cycle losses (targets, valid positions, weights) and the
weighted totals of the aligner and the blender."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from heser.losses import (
    CycleTrip,
    aligner_generator_losses,
    blender_generator_losses,
    cross_reenactment_losses,
    cycle_l1,
    feature_l1,
    hinge_d,
    hinge_g,
)
from tests.conftest import PARAMS


class Doubling(nn.Module):
    """A known "feature network": the image itself and twice the image."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, 2 * x]


class Flatten(nn.Module):
    """A known identity embedding: the pixels as a vector."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(1)


class SumCritic(nn.Module):
    """A known discriminator: logit = 0.1 * sum of pixels, one feature map = 3 * image."""

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return 0.1 * x.sum(dim=(1, 2, 3)), [3 * x]


def test_hinge_d_values_and_signs():
    real = torch.tensor([2.0, 0.5, -1.0], requires_grad=True)
    fake = torch.tensor([-2.0, 0.0, 0.5], requires_grad=True)
    loss = hinge_d(real, fake)
    # relu(1 - real) = (0, 0.5, 2) -> 2.5 / 3; relu(1 + fake) = (0, 1, 1.5) -> 2.5 / 3
    assert loss.item() == pytest.approx(5 / 3)
    loss.backward()
    # D lowers its loss by raising real logits below the margin and lowering fake ones above it
    torch.testing.assert_close(real.grad, torch.tensor([0.0, -1 / 3, -1 / 3]))
    torch.testing.assert_close(fake.grad, torch.tensor([0.0, 1 / 3, 1 / 3]))
    assert hinge_d(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0])).item() == 0


def test_hinge_g_value_and_sign():
    fake = torch.tensor([1.0, -3.0], requires_grad=True)
    loss = hinge_g(fake)
    assert loss.item() == pytest.approx(1.0)  # -(1 - 3) / 2
    loss.backward()
    torch.testing.assert_close(fake.grad, torch.tensor([-0.5, -0.5]))  # G raises D's score


def test_feature_l1_is_the_mean_over_maps_of_each_maps_mean_error():
    fake = [torch.zeros(1, 1, 2, 2, requires_grad=True), torch.ones(1, 1, 1, 1)]
    real = [torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], requires_grad=True),
            -torch.ones(1, 1, 1, 1)]
    loss = feature_l1(fake, real)
    assert loss.item() == pytest.approx((2.5 + 2.0) / 2)  # each map counts once, whatever its size
    loss.backward()
    assert real[0].grad is None  # the real side is a fixed target
    torch.testing.assert_close(fake[0].grad, torch.full((1, 1, 2, 2), -1 / 8))


def _trip(back: list[float], start: list[float], valid: list[float]) -> CycleTrip:
    """A round trip at 1 x len(back) feature cells, the start image at 2 x 2 pixels per cell,
    every colour channel alike."""
    cells = len(back)
    back_t = torch.tensor(back).view(1, 1, 1, cells).expand(1, 3, 1, cells)
    start_t = torch.tensor(start).view(1, 1, 2, 2 * cells).expand(1, 3, 2, 2 * cells)
    return CycleTrip(back_t, start_t, torch.tensor(valid).view(1, 1, 1, cells))


def test_cycle_l1_compares_with_the_area_averaged_start_over_valid_positions():
    # cell 0 covers pixels (0, 0.2 / 0.4, 0.6): mean 0.3, back 0.5 -> 0.2; cell 1 is not valid
    trip = _trip([0.5, 0.0], [0.0, 0.2, 5.0, 5.0, 0.4, 0.6, 5.0, 5.0], [1.0, 0.0])
    assert cycle_l1(trip).item() == pytest.approx(0.2)
    assert cycle_l1(trip._replace(valid=torch.zeros(1, 1, 1, 2))).item() == 0  # none valid


def test_aligner_total_is_the_weighted_sum_of_hand_computed_terms():
    animated = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)
    target = torch.tensor([4.0, 3.0]).view(1, 1, 1, 2)
    weights = PARAMS.aligner.loss.model_copy(update={
        "l1": 10, "perceptual": 1, "feature_matching": 2, "identity": 5, "adversarial": 0.5})
    losses = aligner_generator_losses(animated, target, weights, Doubling(), Flatten(),
                                      SumCritic())
    expected = {
        "l1": 1.0,  # |3 - 4|, |4 - 3|
        "perceptual": (1.0 + 2.0) / 2,  # the image's L1, then twice the image's
        "feature_matching": 3.0,  # 3 * image
        "identity": 1 - 24 / 25,  # 1 - cos((3, 4), (4, 3))
        "adversarial": -0.7,  # -D(I_A) = -0.1 * 7
    }
    expected["total"] = (10 * 1.0 + 1 * 1.5 + 2 * 3.0 + 5 * 0.04 + 0.5 * -0.7)  # 17.35
    assert losses.items() == pytest.approx(expected)


def test_blender_total_sums_both_cycles_each_at_the_cycle_weight():
    blended = torch.full((1, 3, 2, 2), 0.5)
    target = torch.zeros(1, 3, 2, 2)
    cycle = _trip([0.5, 0.0], [0.0, 0.2, 5.0, 5.0, 0.4, 0.6, 5.0, 5.0], [1.0, 0.0])  # 0.2
    cycle_second = _trip([1.0, 1.0], [0.0] * 8, [1.0, 1.0])  # 1.0
    weights = PARAMS.blender.loss.model_copy(update={
        "l1": 10, "perceptual": 1, "cycle": 2, "adversarial": 1})
    losses = blender_generator_losses(blended, target, cycle, cycle_second,
                                      torch.tensor([-0.4, 0.2]), weights, Doubling())
    expected = {"l1": 0.5, "perceptual": (0.5 + 1.0) / 2, "cycle": 0.2, "cycle_second": 1.0,
                "adversarial": 0.1}
    # lambda_c * (0.2 + 1.0): the paper sums the terms (their mean would give 7.05)
    expected["total"] = 10 * 0.5 + 1 * 0.75 + 2 * (0.2 + 1.0) + 1 * 0.1  # 8.25
    assert losses.items() == pytest.approx(expected)


def test_cross_reenactment_terms_and_total():
    cross = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)  # I_A^x, its identity code (3, 4)
    source_identity = torch.tensor([[4.0, 3.0]])
    cross_motion = torch.tensor([[1.0, 0.0]], requires_grad=True)
    driver_motion = torch.tensor([[0.0, 1.0]], requires_grad=True)
    weights = PARAMS.aligner.loss.model_copy(update={
        "cross_identity": 2, "cross_motion": 3, "adversarial": 0.5})
    losses = cross_reenactment_losses(cross, source_identity, cross_motion, driver_motion,
                                      weights, Flatten(), SumCritic())
    expected = {"cross_identity": 1 - 24 / 25, "cross_motion": 1.0,  # orthogonal codes
                "cross_adversarial": -0.7}
    assert losses.items() == pytest.approx(expected)
    assert losses.total.item() == pytest.approx(2 * 0.04 + 3 * 1.0 + 0.5 * -0.7)
    losses.total.backward()
    assert driver_motion.grad is None  # the driver's codes are a fixed target
    assert cross_motion.grad is not None
