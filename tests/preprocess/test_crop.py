"""The crop stage on one real photo cuts exactly what the one cropper cuts for `heser swap` and
`heser finetune`."""

from pathlib import Path

import numpy as np

from heser.data.media import read_image
from heser.data.shards import decode_sample, read_tar
from heser.face.cropper import Cropper
from heser.preprocess.crop import crop_item
from heser.preprocess.items import MediaItem
from tests.conftest import MIN_SIDE, PARAMS, sample_path

PHOTO = "images/dt_woman_D_uncropped.jpg"


def test_the_stage_crops_a_photo_as_the_cropper_does(face_backend, tmp_path: Path):
    path = sample_path(PHOTO)
    tar = tmp_path / "woman_D.tar"
    result = crop_item(MediaItem(PHOTO, path, "woman_D", "image"), face_backend, PARAMS, tar)
    assert result.samples == 1 and not result.rejects
    stored = decode_sample(next(read_tar(tar)))
    cropped = Cropper(face_backend, PARAMS.crop).crop_photo(read_image(path, MIN_SIDE)[0], path)
    assert np.array_equal(stored["img"], cropped.image)
    np.testing.assert_allclose(stored["meta"]["matrix"], cropped.matrix)
