"""parse_item: real maps are written; failed and empty parses are recorded and skipped."""

from pathlib import Path

import numpy as np
import pytest

from heser.data.shards import decode_sample, read_tar
from heser.preprocess.crop import crop_item
from heser.preprocess.items import MediaItem
from heser.preprocess.parse import parse_item
from tests.conftest import PARAMS, SAMPLE, make_config


@pytest.fixture(scope="module")
def crop_tar(tmp_path_factory, face_backend) -> Path:
    tmp = tmp_path_factory.mktemp("parse")
    cfg = make_config(tmp, **{"crop.video.max_frames": 3, "crop.video.stride": 10})
    item = MediaItem("videos/mead_M030_front_happy_level3_001.mp4",
                     SAMPLE / "videos/mead_M030_front_happy_level3_001.mp4", "M030", "video")
    assert crop_item(item, face_backend, cfg, tmp / "crops.tar").samples == 3
    return tmp / "crops.tar"


class _Broken:
    """A parser that fails on the second crop (as a real backend might on odd input)."""

    name, version = "broken", "0"

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, crop, landmarks, scheme):
        self.calls += 1
        if self.calls == 2:
            raise ValueError("mesh lost")
        return self.inner(crop, landmarks, scheme)


class _Blank:
    name, version = "blank", "0"

    def __call__(self, crop, landmarks, scheme):
        return np.zeros(crop.shape[:2], np.uint8)


def test_real_parse_writes_one_map_per_crop(crop_tar, parser, tmp_path):
    result = parse_item(crop_tar, parser, tmp_path / "p.tar", PARAMS.parse.min_face_share)
    assert result.samples == 3 and not result.rejects
    maps = [decode_sample(s)["parse"] for s in read_tar(tmp_path / "p.tar")]
    assert all(m.shape == (256, 256) and m.dtype == np.uint8 for m in maps)


def test_a_failing_crop_is_recorded_and_the_rest_kept(crop_tar, parser, tmp_path):
    result = parse_item(crop_tar, _Broken(parser), tmp_path / "p.tar",
                        PARAMS.parse.min_face_share)
    assert result.samples == 2
    (reject,) = result.rejects
    assert reject.frame == 10 and reject.reason == "parser broken failed: mesh lost"


def test_a_map_without_face_is_a_failed_parse(crop_tar, tmp_path):
    result = parse_item(crop_tar, _Blank(), tmp_path / "p.tar", PARAMS.parse.min_face_share)
    assert result.samples == 0 and len(result.rejects) == 3
    assert result.rejects[0].reason.startswith("parse found almost no face")
    assert (tmp_path / "p.tar").exists() and not list(read_tar(tmp_path / "p.tar"))
