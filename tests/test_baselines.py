"""The non-learned baselines on constructed images whose answers are computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from heser.baselines import baselines, poisson_clone, recolour, reference_baselines

SIZE = 32
# NTSC YIQ (Y is BT.601 luma): the definition the recolour baseline keeps I and Q of
YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _square(top: int, bottom: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top:bottom, top:bottom] = True
    return mask


def test_recolour_takes_luma_from_the_gray_head_and_chroma_from_the_reference():
    reference = np.array([[[200, 100, 50], [250, 250, 10]]], np.uint8)
    gray = np.array([[150.0, 250.0]])
    # Y(200, 100, 50) = 59.8 + 58.7 + 5.7 = 124.2: every channel + 25.8
    # Y(250, 250, 10) = 74.75 + 146.75 + 1.14 = 222.64: + 27.36, clipped at 255
    expected = np.array([[[226, 126, 76], [255, 255, 37]]], np.uint8)
    np.testing.assert_array_equal(recolour(gray, reference), expected)
    # unclipped, the result has the gray head's Y and the reference's I and Q (YIQ)
    yiq_result = YIQ @ recolour(gray, reference)[0, 0].astype(float)
    yiq_reference = YIQ @ reference[0, 0].astype(float)
    assert abs(yiq_result[0] - 150.0) < 0.5  # rounding to uint8 only
    np.testing.assert_allclose(yiq_result[1:], yiq_reference[1:], atol=0.5)


def test_reference_baselines_compose_the_blenders_inputs_exactly():
    head, ring = _square(10, 20), _square(6, 24) & ~_square(10, 20)
    rng = np.random.default_rng(0)
    head_reference, inpaint_reference, background = (
        rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(3))
    gray = rng.uniform(0, 255, (SIZE, SIZE))
    out = reference_baselines(gray, head_reference, inpaint_reference, background, head, ring)
    recoloured = recolour(gray, head_reference)
    expected = np.where(head[..., None], recoloured,
                        np.where(ring[..., None], inpaint_reference, background))
    np.testing.assert_array_equal(out["recolour"], expected)
    # Poisson changes the head only
    np.testing.assert_array_equal(out["poisson"][~head], expected[~head])


def test_poisson_of_a_flat_head_takes_the_colour_around_it():
    # a flat head has no gradient: the Poisson solution is the colour at its edge, the ring's
    head, ring = _square(10, 20), _square(6, 24) & ~_square(10, 20)
    flat_head = np.full((SIZE, SIZE, 3), (200, 30, 30), np.uint8)
    scene = np.zeros((SIZE, SIZE, 3), np.uint8)
    scene[ring] = 90
    out = reference_baselines(np.full((SIZE, SIZE), 80.0), flat_head, scene, scene, head, ring)
    assert np.abs(out["poisson"][head].astype(int) - 90).max() <= 3  # Telea: within 2
    np.testing.assert_array_equal(out["poisson"][~head], scene[~head])
    # seamlessClone's boundary is the destination on the mask's own edge
    np.testing.assert_array_equal(poisson_clone(flat_head, scene, head)[head], scene[head])
    # an empty mask pastes nothing
    np.testing.assert_array_equal(poisson_clone(flat_head, scene, np.zeros_like(head)), scene)
    with pytest.raises(ValueError, match="same-sized RGB"):  # not OpenCV's segmentation fault
        poisson_clone(flat_head, scene[..., :1], head)


def test_naive_paste_is_the_exact_mask_composite_over_the_inpainted_hole():
    head, hole = _square(10, 20), _square(6, 24)
    rng = np.random.default_rng(1)
    source = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    background = np.full((SIZE, SIZE, 3), 120, np.uint8)
    background[hole] = 0  # the hole is blank, as the callers pass it
    out = baselines(source, background, head, hole)
    np.testing.assert_array_equal(out["paste"][head], source[head])
    np.testing.assert_array_equal(out["paste"][~hole], background[~hole])
    # the ring is inpainted from the flat surroundings: their colour, not the blank hole
    ring = hole & ~head
    assert np.abs(out["paste"][ring].astype(int) - 120).max() <= 3  # Telea: within 2
    np.testing.assert_array_equal(out["poisson"][~head], out["paste"][~head])
