import numpy as np

from heser.face.labels import BACKEND_CLASSES, HEAD_REGIONS, Region, lookup_table, overlay


def test_bisenet_table_covers_19_classes_in_order():
    lut = lookup_table("bisenet19")
    assert len(lut) == 19
    assert lut[0] == Region.BACKGROUND and lut[1] == Region.FACE and lut[10] == Region.NOSE
    assert lut[11] == Region.TOOTH and lut[17] == Region.HAIR and lut[18] == Region.HAT


def test_every_backend_maps_into_heser_regions():
    for backend in BACKEND_CLASSES:
        assert set(lookup_table(backend)) <= {int(r) for r in Region}


def test_head_regions_leave_out_the_target_body():
    assert Region.NECK not in HEAD_REGIONS and Region.BODY not in HEAD_REGIONS
    assert Region.HAIR in HEAD_REGIONS and Region.EAR in HEAD_REGIONS


def test_overlay_leaves_background_untouched():
    rgb = np.full((4, 4, 3), 100, np.uint8)
    labels = np.zeros((4, 4), np.uint8)
    labels[0, 0] = Region.HAIR
    out = overlay(rgb, labels)
    assert (out[1:, 1:] == 100).all() and (out[0, 0] != 100).any()
