"""The one cropper on real faces: the several-faces policy, huge frames, min_face_px, smoothed
windows of a video."""

import cv2
import numpy as np
import pytest

from heser.face.align import window_from_points
from heser.face.cropper import CropError, Cropper, choose_face
from tests.conftest import PARAMS, read_rgb

PHOTO = "images/lp_d9jpg_woman_long_hair_yellow.jpg"


@pytest.fixture(scope="module")
def cropper(face_backend) -> Cropper:
    return Cropper(face_backend, PARAMS.crop)


def test_largest_face_first_then_the_tracked_one(face_backend):
    small = read_rgb("images/st_woman_B_happy1.png")  # 226x221: the smaller face
    big = read_rgb("images/dt_man_E_crop256.png")
    h, w = small.shape[:2]
    canvas = np.zeros((256, w + 256, 3), np.uint8)
    canvas[:h, :w], canvas[:, w:] = small, big
    faces = face_backend(canvas)
    assert len(faces) == 2
    largest = choose_face(faces, previous=None)
    assert largest.box[0] > 200  # the man on the right
    other = next(f for f in faces if f is not largest)
    # in a video whose kept face so far is the woman, she keeps the track
    assert choose_face(faces, previous=other) is other


def test_detection_on_a_huge_frame_is_downscaled_and_mapped_back(cropper: Cropper):
    image = read_rgb(PHOTO)  # 512 px wide; x10 = 5120, above crop.max_image_side 4096
    (small,) = cropper.detect(image)
    huge = cv2.resize(image, None, fx=10, fy=10, interpolation=cv2.INTER_LINEAR)
    (big,) = cropper.detect(huge)
    np.testing.assert_allclose(big.five_points / 10, small.five_points, atol=3)
    assert big.landmarks.shape == small.landmarks.shape


def test_a_photo_is_cropped_around_its_face_or_refused_by_name(face_backend, cropper: Cropper):
    image = read_rgb(PHOTO)
    notes: list[str] = []
    crop = cropper.crop_photo(image, "photo.jpg", notes)
    assert crop.image.shape == (PARAMS.crop.size, PARAMS.crop.size, 3) and notes == []
    assert crop.window == window_from_points(crop.face.five_points, PARAMS.crop.scale,
                                             PARAMS.crop.center_shift)
    strict = Cropper(face_backend, PARAMS.crop.model_copy(update={"min_face_px": 2000}))
    with pytest.raises(CropError, match=r"photo.jpg: face too small \(\d+ px < "
                                        r"crop.min_face_px 2000\)"):
        strict.crop_photo(image, "photo.jpg")
    with pytest.raises(CropError, match="wall.png: no face found"):
        cropper.crop_photo(np.full((300, 300, 3), 120, np.uint8), "wall.png")


def test_windows_are_smoothed_within_runs_of_frames_with_a_face(cropper: Cropper):
    image = read_rgb(PHOTO)
    (face,) = cropper.detect(image)
    shifted = [face.__class__(face.box + dx, face.score, face.five_points + dx,
                              face.landmarks, face.scheme) for dx in (0, 30, 60)]
    windows = cropper.windows([*shifted, None, shifted[0]], sigma=1.5)
    raw = [cropper.window(f) for f in shifted]
    assert windows[3] is None
    assert windows[4] == raw[0]  # a run of one frame is not smoothed
    assert raw[0].cx < windows[0].cx < windows[1].cx < windows[2].cx < raw[2].cx
    assert windows[1].cx == pytest.approx(raw[1].cx)  # symmetric neighbours
    assert cropper.windows(shifted, sigma=0) == raw
