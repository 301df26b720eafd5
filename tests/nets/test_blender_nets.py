"""The Head2Scene Blender's networks: the FPN, the blending U-net and its input, D_B, and G_B's
forward pass against the dense correspondence.

Small widths keep these fast; the shapes and properties do not depend on them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from heser.nets.blender import Head2SceneBlender
from heser.nets.blender_discriminator import MaskConditionedDiscriminator
from heser.nets.blending_unet import BLENDER_IN_CHANNELS, BlendingUNet, blender_input
from heser.nets.correspondence import REGION_NAMES, split_references
from heser.nets.fpn import FeaturePyramid
from tests.conftest import make_config
from tests.nets.correspondence_reference import dense_cycle, dense_warp_with

B = 2


def _images(batch: int, size: int, channels: int = 3) -> Tensor:
    return torch.rand(batch, channels, size, size) * 2 - 1


def _all_have_grads(module: nn.Module) -> None:
    missing = [name for name, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


def _split_equals_whole(model: nn.Module, x: Tensor) -> None:
    """Two replicas of the same state (as data parallelism makes) on halves of the batch
    compute what one model computes on the whole batch: no layer couples samples."""
    first, second = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        split = torch.cat([first(x[:2]), second(x[2:])])
        whole = model(x)
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


@pytest.fixture
def fpn() -> FeaturePyramid:
    torch.manual_seed(0)
    return FeaturePyramid(base_channels=8, max_channels=32, levels=3, out_channels=16)


@pytest.fixture
def unet() -> BlendingUNet:
    torch.manual_seed(0)
    return BlendingUNet(base_channels=8, max_channels=32, levels=7)


@pytest.mark.parametrize("size", [64, 128])
def test_fpn_gives_fused_features_at_a_quarter_and_every_part_learns(fpn, size):
    features = fpn(_images(B, size))
    assert features.shape == (B, 16, size // 4, size // 4)
    features.square().mean().backward()
    _all_have_grads(fpn)


def test_fpn_rejects_a_size_its_pyramid_cannot_halve(fpn):
    with pytest.raises(ValueError, match="divisible by 16"):
        fpn(_images(1, 72))


@pytest.mark.parametrize("size", [64, 128])
def test_unet_paints_a_full_size_image_in_range_and_every_part_learns(unet, size):
    blended = unet(_images(B, size, BLENDER_IN_CHANNELS))
    assert blended.shape == (B, 3, size, size)
    assert blended.min() >= -1 and blended.max() <= 1
    blended.square().mean().backward()
    _all_have_grads(unet)


@pytest.mark.parametrize("size", [96, 100])
def test_unet_rejects_a_size_not_divisible_by_its_six_halvings(unet, size):
    with pytest.raises(ValueError, match="divisible by 64"):
        unet(_images(1, size, BLENDER_IN_CHANNELS))


def test_unet_levels_set_the_required_divisor():
    shallow = BlendingUNet(base_channels=8, max_channels=16, levels=3)
    assert shallow(_images(1, 36, BLENDER_IN_CHANNELS)).shape == (1, 3, 36, 36)
    with pytest.raises(ValueError, match="divisible by 4"):
        shallow(_images(1, 34, BLENDER_IN_CHANNELS))


def test_unet_rejects_a_wrong_channel_count(unet):
    with pytest.raises(ValueError, match="12 channels"):
        unet(_images(1, 64, 11))


def _blender_parts(size: int = 8) -> list[Tensor]:
    """The six inputs in the paper's order, each filled with its own position as a constant."""
    channels = [3, 3, 1, 3, 1, 1]
    return [torch.full((B, c, size, size), float(i)) for i, c in enumerate(channels)]


def test_blender_input_concatenates_in_the_papers_order():
    x = blender_input(*_blender_parts())
    assert x.shape == (B, BLENDER_IN_CHANNELS, 8, 8)
    # I^HR 0-2, I^IR 3-5, M_A^H 6, I_T^BG 7-9, M_A^I 10, I_A^GH 11
    expected = torch.tensor([0, 0, 0, 1, 1, 1, 2, 3, 3, 3, 4, 5], dtype=torch.float)
    torch.testing.assert_close(x[:, :, 0, 0], expected.expand(B, -1))
    assert (x == x[:, :, :1, :1]).all()


@pytest.mark.parametrize(("index", "shape", "name"), [
    (0, (B, 1, 8, 8), "head_reference"),  # a mask where an image belongs
    (2, (B, 3, 8, 8), "head_mask"),  # an image where a mask belongs
    (3, (B, 3, 8, 4), "background"),  # another size
    (4, (B + 1, 1, 8, 8), "inpaint_mask"),  # another batch
    (5, (1, 8, 8), "gray_head"),  # no channel axis
])
def test_blender_input_names_the_input_of_the_wrong_shape(index, shape, name):
    parts = _blender_parts()
    parts[index] = torch.zeros(shape)
    with pytest.raises(ValueError, match=name):
        blender_input(*parts)


@pytest.mark.parametrize("size", [64, 128])
def test_discriminator_scores_each_sample_and_every_part_learns(size):
    torch.manual_seed(0)
    disc = MaskConditionedDiscriminator(size, base_channels=8, max_channels=32)
    logits, features = disc(_images(B, size), torch.rand(B, 2, size, size))
    assert logits.shape == (B,)
    assert features[-1].shape[-2:] == (4, 4)
    assert len(features) == len(disc.blocks)
    logits.sum().backward()
    _all_have_grads(disc)


def test_discriminator_depends_on_its_condition():
    torch.manual_seed(0)
    disc = MaskConditionedDiscriminator(64, base_channels=8, max_channels=32,
                                        condition_channels=2).eval()
    images, masks = _images(B, 64), (torch.rand(B, 2, 64, 64) > 0.5).float()
    with torch.no_grad():
        logits, _ = disc(images, masks)
        other, _ = disc(images, 1 - masks)
    assert (logits - other).abs().min() > 1e-6


def test_discriminator_rejects_the_wrong_number_of_condition_channels():
    disc = MaskConditionedDiscriminator(64, base_channels=8, max_channels=32,
                                        condition_channels=3)
    with pytest.raises(ValueError, match="conditions"):
        disc(_images(B, 64), torch.rand(B, 2, 64, 64))
    with pytest.raises(ValueError, match="4 x 2"):
        MaskConditionedDiscriminator(48, base_channels=8, max_channels=32)


def test_fpn_split_batch_equals_whole_batch(fpn):
    _split_equals_whole(fpn, _images(4, 64))


def test_unet_split_batch_equals_whole_batch(unet):
    # train mode: spectral norm's power iteration runs once per replica, as in data parallelism
    _split_equals_whole(unet.train(), _images(4, 64, BLENDER_IN_CHANNELS))


def test_blender_references_and_cycles_are_the_dense_correspondence(tmp_path):
    """One forward pass computes each colour reference once and reuses it for the U-net input
    and the cycle: its outputs equal the dense correspondence computed from scratch."""
    cfg = make_config(tmp_path, **{
        "blender.size": 64, "blender.fpn.base_channels": 8, "blender.fpn.max_channels": 16,
        "blender.fpn.out_channels": 16, "blender.unet.base_channels": 8,
        "blender.unet.max_channels": 16, "blender.chunk_size": 50}).blender
    torch.manual_seed(0)
    blender = Head2SceneBlender(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    animated, target, second = (torch.rand(B, 3, 64, 64, generator=gen) * 2 - 1
                                for _ in range(3))  # C'(I_A), F(I_T), I_T'
    regions_a, regions_t, regions_s = (torch.randint(-1, len(REGION_NAMES), (B, 16, 16),
                                                     generator=gen) for _ in range(3))
    masks = (torch.rand(B, 1, 64, 64, generator=gen) > 0.5).float()
    with torch.no_grad():
        out = blender(animated, target, regions_a, regions_t, masks, target, 1 - masks,
                      animated[:, :1], second, regions_s)
        f_a, f_t, f_s = (blender.fpn(x) for x in (animated, target, second))
    reference, _ = dense_warp_with(f_a, f_t, regions_a, regions_t, target, cfg.tau)
    head, inpaint = split_references(reference, regions_a, (64, 64))
    torch.testing.assert_close(out["head_reference"], head, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["inpaint_reference"], inpaint, rtol=0, atol=1e-5)
    cycle, cycle_valid = dense_cycle(f_a, f_t, regions_a, regions_t, target, cfg.tau)
    torch.testing.assert_close(out["cycle"], cycle, rtol=0, atol=1e-5)
    assert torch.equal(out["cycle_valid"], cycle_valid)
    # the second cycle leaves from I_T' and comes back to it: I_T' -> A -> I_T' (eq. 10)
    second_cycle, second_valid = dense_cycle(f_a, f_s, regions_a, regions_s, second, cfg.tau)
    torch.testing.assert_close(out["cycle_second"], second_cycle, rtol=0, atol=1e-5)
    assert torch.equal(out["cycle_second_valid"], second_valid)
