"""Shapes and gradient flow of the aligner's networks (CPU profile sizes from params.yaml)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from heser.face.motion import MOTION_FEATURES
from heser.nets.aligner import Head2HeadAligner, driver_inputs
from heser.nets.discriminator import Discriminator
from heser.nets.generator import AdaINMLP, StyleGenerator
from heser.nets.motion_encoder import MotionEncoder
from heser.nets.portrait_encoder import PortraitEncoder
from tests.conftest import PARAMS

CFG = PARAMS.aligner
B, K, ID_DIM = 2, 3, 128


def _all_have_grads(module: torch.nn.Module) -> None:
    missing = [name for name, p in module.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


@pytest.fixture(scope="module")
def aligner() -> Head2HeadAligner:
    torch.manual_seed(0)
    return Head2HeadAligner(CFG, ID_DIM)


def _inputs(n: int = B):
    size = CFG.size
    return (torch.rand(n, K, 3, size, size) * 2 - 1, torch.randn(n, K, ID_DIM),
            {"pose_input": torch.rand(n, 3, CFG.pose.input_size, CFG.pose.input_size) * 2 - 1,
             "expression_input": torch.rand(n, 3, CFG.expression.input_size,
                                            CFG.expression.input_size) * 2 - 1})


def test_aligner_renders_the_crop_size_in_range_and_every_part_learns(aligner):
    aligner.zero_grad()
    animated = aligner(*_inputs())
    assert animated.shape == (B, 3, CFG.size, CFG.size)
    assert animated.min() >= -1 and animated.max() <= 1
    animated.square().mean().backward()
    _all_have_grads(aligner)


def test_source_code_averages_the_k_shots(aligner):
    sources, ids, *_ = _inputs()
    code = aligner.source_code(sources, ids)
    assert code.shape == (B, CFG.portrait.dim + ID_DIM)
    aligner.eval()
    with torch.no_grad():  # eq. 1: the order of the K sources does not matter
        reordered = aligner.source_code(sources.flip(1), ids.flip(1))
        torch.testing.assert_close(aligner.source_code(sources, ids), reordered)
    aligner.train()


def test_source_index_animates_a_source_set_per_driver(aligner):
    sources, ids, driver = _inputs()
    aligner.eval()
    with torch.no_grad():
        both = aligner(sources, ids, {k: torch.cat([x, x]) for k, x in driver.items()},
                       torch.tensor([0, 1, 1, 0]))
        plain = aligner(sources, ids, driver)
        swapped = aligner(sources.flip(0), ids.flip(0), driver)
    aligner.train()
    torch.testing.assert_close(both[:2], plain)
    torch.testing.assert_close(both[2:], swapped)  # source sets 1, 0 with drivers 0, 1


def test_mlp_spectral_norm_is_a_choice():
    def parametrized(spectral: bool) -> bool:
        mlp = AdaINMLP(8, 16, 4, spectral)
        return any(parametrize.is_parametrized(layer) for layer in mlp.net)

    assert parametrized(True) and not parametrized(False)


def test_encoder_spectral_norm_is_a_choice():
    def parametrized(spectral: bool) -> list[bool]:
        encoders = [PortraitEncoder("resnet", 16, 8, 2, 16, None, spectral),
                    MotionEncoder(16, 0.25, spectral)]
        return [any(parametrize.is_parametrized(m) for m in e.modules()) for e in encoders]

    assert parametrized(True) == [True, True] and parametrized(False) == [False, False]


def test_codes_reach_the_mlp_at_unit_scale_whatever_their_encoders_give():
    cfg = CFG.model_copy(update={"code_norm": True})
    aligner = Head2HeadAligner(cfg, ID_DIM)
    codes = torch.randn(B, sum(aligner.code_dims))
    shrunk = codes * torch.cat([torch.full((d,), scale) for d, scale in
                                zip(aligner.code_dims, (0.04, 0.09, 1.0, 10.0))])
    standardised = aligner.standardised(shrunk)
    torch.testing.assert_close(standardised, aligner.standardised(codes), atol=0, rtol=1e-2)
    for block in standardised.split(aligner.code_dims, dim=1):
        torch.testing.assert_close(block.std(dim=1, unbiased=False), torch.ones(B), atol=1e-2,
                                   rtol=0)
    plain = Head2HeadAligner(CFG.model_copy(update={"code_norm": False}), ID_DIM)
    assert plain.standardised(shrunk) is shrunk


def test_motion_batch_norm_passes_codes_that_barely_vary_on_at_unit_spread():
    aligner = Head2HeadAligner(CFG.model_copy(update={"code_batch_norm": "motion"}), ID_DIM)
    norm = aligner.motion_norm
    motion = 3.0 + 0.05 * torch.randn(8, CFG.pose.dim + CFG.expression.dim)  # one code, mostly
    torch.testing.assert_close(norm(motion).std(dim=0, unbiased=False),
                               torch.ones(motion.shape[1]), atol=0.05, rtol=0)
    assert torch.allclose(norm.running_mean, torch.full_like(norm.running_mean, 0.3), atol=0.01)
    one = norm(motion[:1])  # one-code training batch: the running statistics, no error
    torch.testing.assert_close(one, (motion[:1] - norm.running_mean)
                               / (norm.running_var + norm.eps).sqrt())
    plain = Head2HeadAligner(CFG.model_copy(update={"code_batch_norm": "none"}), ID_DIM)
    assert plain.motion_norm is None
    expression = Head2HeadAligner(CFG.model_copy(update={"code_batch_norm": "expression"}),
                                  ID_DIM)
    assert expression.motion_norm.num_features == CFG.expression.dim


def test_expression_batch_norm_normalises_e_exp_and_leaves_the_other_codes_as_they_were():
    torch.manual_seed(0)
    aligner = Head2HeadAligner(CFG.model_copy(update={"code_batch_norm": "expression"}), ID_DIM)
    driver = _inputs(2 * B)[2]
    source_code = torch.randn(2 * B, sum(aligner.code_dims[:2]))
    with torch.no_grad():
        got = aligner.mlp_input(source_code, driver)
        expression = aligner.expression(driver["expression_input"])
        wanted = aligner.standardised(torch.cat([
            source_code, aligner.pose(driver["pose_input"]),
            F.batch_norm(expression, None, None, training=True, eps=aligner.motion_norm.eps)],
            dim=1))
    torch.testing.assert_close(got, wanted)


def test_encoders_give_their_code_sizes():
    por = PortraitEncoder("resnet", 512, 16, 4, 64, None)
    assert por(torch.randn(2, 3, 64, 64)).shape == (2, 512)
    assert por.average(torch.randn(2, 3, 3, 64, 64)).shape == (2, 512)
    motion = MotionEncoder(256, 0.5)
    assert motion(torch.randn(2, 3, 96, 96)).shape == (2, 256)


def test_generator_rejects_sizes_it_cannot_reach():
    with pytest.raises(ValueError, match="not start_size"):
        StyleGenerator(96, 4, 16, 64)


def test_discriminator_logits_features_and_gradients():
    disc = Discriminator(CFG.size, 16, 64)
    images = torch.rand(B, 3, CFG.size, CFG.size, requires_grad=True)
    logits, features = disc(images)
    assert logits.shape == (B,) and len(features) == 5  # 128 -> 4 in five halvings
    assert features[-1].shape[-1] == 4
    logits.sum().backward()
    _all_have_grads(disc)
    assert images.grad.abs().sum() > 0


def test_resnext50_portrait_encoder_starts_from_imagenet_weights(tmp_path):
    from heser.nets.resnext import ResNeXt50

    torch.manual_seed(0)
    imagenet = ResNeXt50()
    torch.save(imagenet.state_dict(), tmp_path / "resnext50_32x4d.pth")
    encoder = PortraitEncoder("resnext50", 512, 16, 4, 64, tmp_path / "resnext50_32x4d.pth")
    torch.testing.assert_close(encoder.backbone.net.layer4[2].conv3.weight,
                               imagenet.layer4[2].conv3.weight)
    codes = encoder.average(torch.rand(1, 2, 3, 64, 64) * 2 - 1)
    assert codes.shape == (1, 512)
    codes.sum().backward()
    _all_have_grads(encoder)


def test_landmark_motion_input_replaces_the_image_encoders_and_reads_only_the_features():
    torch.manual_seed(0)
    aligner = Head2HeadAligner(CFG.model_copy(update={"motion_input": "landmarks"}), ID_DIM)
    assert not hasattr(aligner, "pose") and not hasattr(aligner, "expression")
    sources, ids, _ = _inputs()
    features = torch.randn(B, MOTION_FEATURES)
    aligner.zero_grad()
    animated = aligner(sources, ids, {"landmark_motion": features})
    assert animated.shape == (B, 3, CFG.size, CFG.size)
    animated.square().mean().backward()
    _all_have_grads(aligner)
    aligner.eval()
    with torch.no_grad():
        code = aligner.source_code(sources[:1], ids[:1]).expand(B, -1)
        moved = aligner.animate(code, {"landmark_motion": features})
    assert (moved[0] - moved[1]).abs().mean() > 0  # two drivers, two pictures


def test_driver_inputs_give_each_motion_path_what_it_reads():
    image = torch.rand(2, 3, 96, 96) * 2 - 1
    driver = driver_inputs(CFG, image, None)
    assert driver["pose_input"].shape[-1] == CFG.pose.input_size
    assert driver["expression_input"].shape[-1] == CFG.expression.input_size
    landmarks = CFG.model_copy(update={"motion_input": "landmarks"})
    features = torch.randn(2, MOTION_FEATURES, dtype=torch.float64)
    got = driver_inputs(landmarks, image, features)
    assert list(got) == ["landmark_motion"] and got["landmark_motion"].dtype == torch.float32
    with pytest.raises(ValueError, match="without landmark features"):
        driver_inputs(landmarks, image, None)
