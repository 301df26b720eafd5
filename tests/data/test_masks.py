"""Fig. 4 masks against a hand computation on a real label map."""

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

from heser.data.masks import dilation_radius, disk, fig4_masks, head_mask
from heser.face.labels import HEAD_REGIONS, Region
from tests.conftest import read_rgb


@pytest.fixture(scope="module")
def label_maps(face_backend, parser):
    """Real label maps of two real crops (as the aligner output and the target)."""
    maps = []
    for name in ("images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png"):
        rgb = read_rgb(name)
        (face,) = face_backend(rgb)
        maps.append(parser(rgb, face.landmarks, face.scheme))
    return maps


def test_masks_match_hand_computed(label_maps):
    animated, target = label_maps
    dilation = 0.05
    radius = dilation_radius(dilation, animated.shape[1])
    structure = disk(radius).numpy().astype(bool)
    head_a = np.isin(animated, [int(r) for r in HEAD_REGIONS])
    head_t = np.isin(target, [int(r) for r in HEAD_REGIONS])
    union = binary_dilation(head_a | head_t, structure)
    expected = {
        "head_animated": head_a,
        "head_target": head_t,
        "inpaint_target": binary_dilation(head_t, structure) & ~head_t,
        "inpaint_animated": union & ~head_a,
        "background": ~union,
    }
    masks = fig4_masks(torch.from_numpy(animated)[None], torch.from_numpy(target)[None], dilation)
    for name, want in expected.items():
        got = getattr(masks, name)[0, 0].numpy()
        assert got.shape == want.shape and set(np.unique(got)) <= {0.0, 1.0}
        np.testing.assert_array_equal(got.astype(bool), want, err_msg=name)
    assert expected["inpaint_target"].any() and expected["inpaint_animated"].any()


def test_head_mask_excludes_neck_body_background(label_maps):
    labels = torch.from_numpy(label_maps[0])[None]
    head = head_mask(labels)[0, 0].bool()
    for region in (Region.NECK, Region.BODY, Region.BACKGROUND):
        assert not head[labels[0] == region].any()
    assert head[labels[0] == Region.HAIR].all() and head[labels[0] == Region.NOSE].all()


def test_batched_equals_one_by_one(label_maps):
    a, t = (torch.from_numpy(m) for m in label_maps)
    batch = fig4_masks(torch.stack([a, t]), torch.stack([t, a]), 0.06)
    single = fig4_masks(t[None], a[None], 0.06)
    assert torch.equal(batch.inpaint_animated[1], single.inpaint_animated[0])


def test_shape_mismatch_is_an_error(label_maps):
    a = torch.from_numpy(label_maps[0])[None]
    with pytest.raises(ValueError, match="differ in shape"):
        fig4_masks(a, a[:, :128], 0.06)
