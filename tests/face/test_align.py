"""Crop geometry on real faces: alignment, landmark transform, smoothing, borders, huge inputs."""

import cv2
import numpy as np
import pytest

from heser.data.video_io import VideoReader
from heser.face.align import (
    CropWindow,
    crop_matrix,
    inside_fraction,
    paste_crop,
    smooth_windows,
    transform_points,
    warp_crop,
    window_from_points,
)
from tests.conftest import read_rgb, sample_path

PHOTO = "images/lp_d9jpg_woman_long_hair_yellow.jpg"


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("degrees", [0, 20, -25])
def test_crop_levels_the_eyes_and_centres_the_face(face_backend, degrees):
    image = _rotate(read_rgb(PHOTO), degrees)
    (face,) = face_backend(image)
    window = window_from_points(face.five_points, scale=1.3, center_shift=0.3)
    crop, matrix = warp_crop(image, window, 256)
    five = transform_points(face.five_points, matrix)
    left_eye, right_eye, nose = five[0], five[1], five[2]
    assert abs(left_eye[1] - right_eye[1]) < 3  # eye line horizontal whatever the head roll
    assert left_eye[0] < 128 < right_eye[0]
    assert abs(nose[0] - 128) < 20
    # the whole head fits: eyes in the upper half, mouth above the lower quarter
    assert 60 < left_eye[1] < 128 and five[3:, 1].max() < 192
    # the stored landmarks are where the face is in the crop: detect again on the crop
    (again,) = face_backend(crop)
    assert np.abs(again.five_points - five).max() < 6


def test_transform_points_scales_depth_and_matches_matrix():
    window = CropWindow(100.0, 80.0, 50.0, np.pi / 6)
    matrix = crop_matrix(window, 200)
    points = np.array([[100.0, 80.0, 10.0], [150.0, 80.0, -4.0]])
    out = transform_points(points, matrix)
    np.testing.assert_allclose(out[0, :2], [100, 100], atol=1e-4)  # centre -> crop centre
    np.testing.assert_allclose(np.hypot(*(out[1, :2] - out[0, :2])), 100, atol=1e-3)
    np.testing.assert_allclose(out[:, 2], [20, -8], atol=1e-4)  # z scaled by 200 / (2 * 50)


def test_smoothing_removes_jitter_on_a_real_video(face_backend):
    reader = VideoReader(sample_path("videos/lp_d3_woman_brown_hair.mp4"))
    windows = [window_from_points(face_backend(rgb)[0].five_points, 1.3, 0.3)
               for _, rgb in reader.frames(stride=2, max_frames=24)]
    rng = np.random.default_rng(0)
    jittered = [CropWindow(w.cx + rng.normal(0, 3), w.cy + rng.normal(0, 3), w.half, w.angle)
                for w in windows]
    smoothed = smooth_windows(jittered, sigma=1.5)

    def roughness(ws):  # mean second difference of the centre: jitter, not head motion
        centres = np.array([[w.cx, w.cy] for w in ws])
        return np.linalg.norm(np.diff(centres, n=2, axis=0), axis=1).mean()

    assert roughness(smoothed) < 0.5 * roughness(jittered)
    assert roughness(smooth_windows(windows, 1.5)) <= roughness(windows)
    assert smooth_windows(jittered, sigma=0) == jittered


def test_inside_fraction_and_black_border():
    image = read_rgb(PHOTO)
    h, w = image.shape[:2]
    centred = CropWindow(w / 2, h / 2, min(h, w) / 4, 0.0)
    assert inside_fraction(centred, image.shape) == 1.0
    corner = CropWindow(0.0, 0.0, min(h, w) / 4, 0.0)
    assert inside_fraction(corner, image.shape) == pytest.approx(0.25, abs=0.02)
    crop, _ = warp_crop(image, corner, 64)
    assert crop[:30, :30].max() == 0 and crop[34:, 34:].mean() > 10


def test_huge_input_crops_like_a_normal_one(face_backend):
    image = read_rgb(PHOTO)
    (face,) = face_backend(image)
    window = window_from_points(face.five_points, 1.3, 0.3)
    small, _ = warp_crop(image, window, 128)
    big_image = cv2.resize(image, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)
    big_window = CropWindow(window.cx * 6 + 2.5, window.cy * 6 + 2.5, window.half * 6, window.angle)
    big, _ = warp_crop(big_image, big_window, 128)  # goes through the area pre-downscale
    assert np.abs(big.astype(int) - small.astype(int)).mean() < 6


def test_paste_crop_inverts_warp_crop_inside_the_window_and_leaves_the_rest():
    image = read_rgb(PHOTO)
    window = CropWindow(image.shape[1] / 2, image.shape[0] / 3, 120.0, 0.3)
    crop, matrix = warp_crop(image, window, 256)
    inverted = 255 - crop
    alpha = np.zeros((256, 256), np.float32)
    alpha[64:192, 64:192] = 1
    pasted = paste_crop(image, inverted, alpha, matrix)
    # the window centre now holds the inverted crop, resampled twice (bilinear)
    cx, cy = int(window.cx), int(window.cy)
    patch = pasted[cy - 20:cy + 20, cx - 20:cx + 20].astype(int)
    assert np.abs(patch - (255 - image[cy - 20:cy + 20, cx - 20:cx + 20])).mean() < 12
    # outside the pasted square nothing moved, and the input was not modified
    assert np.array_equal(pasted[:40], image[:40]) and np.array_equal(pasted[-40:], image[-40:])
    assert not np.array_equal(pasted, image)
    zero = paste_crop(image, inverted, np.zeros_like(alpha), matrix)
    assert np.array_equal(zero, image)
