"""The driver's landmark features: what each number reads, what it ignores, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from heser.face.motion import MOTION_FEATURES, POINTS, motion_features

CROP = 256
POSE, EXPRESSION = slice(0, 9), slice(9, 16)
MOUTH_OPENING, MOUTH_WIDTH = 9, 10


def frontal_face(scheme: str = "mediapipe468", mouth: float = 0.1) -> np.ndarray:
    """Landmarks of an upright frontal face at the crop's centre (image y grows downwards):
    every point off in the scene, the ones the features read placed like a face's."""
    n = 468 if scheme == "mediapipe468" else 68
    marks = np.random.default_rng(0).normal(CROP / 2, 5.0, (n, 3))
    p = POINTS[scheme]
    place = {p.outer_eye_corners[0]: (98, 110), p.outer_eye_corners[1]: (158, 110),
             p.nose_bridge: (128, 110), p.chin: (128, 190),
             p.inner_lips[0]: (128, 160 - 30 * mouth), p.inner_lips[1]: (128, 160 + 30 * mouth),
             p.mouth_corners[0]: (110, 160), p.mouth_corners[1]: (146, 160),
             p.right_eyelids[0]: (108, 106), p.right_eyelids[1]: (108, 114),
             p.left_eyelids[0]: (148, 106), p.left_eyelids[1]: (148, 114),
             p.brows[0]: (108, 92), p.brows[1]: (148, 92)}
    for index, (x, y) in place.items():
        marks[index] = (x, y, 0.0)
    return marks


def _about_centre(marks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    centre = np.array([CROP / 2, CROP / 2, 0.0])
    return (marks - centre) @ matrix.T + centre


def test_an_upright_frontal_face_reads_as_such():
    features = motion_features(frontal_face(), CROP)
    assert features.shape == (MOTION_FEATURES,) and features.dtype == np.float32
    np.testing.assert_allclose(features[:6], [1, 0, 0, 0, -1, 0], atol=1e-6)  # x right, y up
    assert features[MOUTH_OPENING] == pytest.approx(6 / 60)  # lip gap over inter-ocular
    assert features[MOUTH_WIDTH] == pytest.approx(36 / 60)
    assert features[8] == pytest.approx(np.log(60 / CROP))


def test_opening_the_mouth_moves_the_mouth_opening_alone():
    shut = motion_features(frontal_face(mouth=0.05), CROP)
    open_ = motion_features(frontal_face(mouth=0.4), CROP)
    changed = np.flatnonzero(~np.isclose(shut, open_, atol=1e-6))
    assert changed.tolist() == [MOUTH_OPENING]
    assert open_[MOUTH_OPENING] > shut[MOUTH_OPENING]


def test_a_head_turn_moves_the_rotation_and_leaves_the_expression():
    face = frontal_face(mouth=0.3)
    turn = Rotation.from_euler("yxz", [25, -10, 15], degrees=True).as_matrix()
    still, turned = motion_features(face, CROP), motion_features(_about_centre(face, turn), CROP)
    np.testing.assert_allclose(turned[EXPRESSION], still[EXPRESSION], atol=1e-5)
    upright = np.array([[1.0, 0, 0], [0, -1, 0]])  # the frame's x and y before the turn
    np.testing.assert_allclose(turned[:6].reshape(2, 3), upright @ turn.T, atol=1e-5)


def test_moving_and_scaling_the_face_in_the_crop_moves_place_and_size_alone():
    face = frontal_face(mouth=0.3)
    still = motion_features(face, CROP)
    moved = motion_features(_about_centre(face, 1.5 * np.eye(3)) + [10, -20, 0], CROP)
    np.testing.assert_allclose(moved[EXPRESSION], still[EXPRESSION], atol=1e-5)
    np.testing.assert_allclose(moved[:6], still[:6], atol=1e-6)
    assert moved[8] == pytest.approx(still[8] + np.log(1.5))
    np.testing.assert_allclose(moved[6:8] - still[6:8] * 1.5, np.array([10, -20]) / CROP * 2,
                               atol=1e-5)


def test_ibug68_landmarks_read_the_same_face_alike():
    np.testing.assert_allclose(motion_features(frontal_face("ibug68"), CROP),
                               motion_features(frontal_face(), CROP), atol=1e-5)


@pytest.mark.parametrize("marks, match", [
    (np.full((468, 3), 100.0), "eye-corner axis has no length"),
    (np.full((5, 2), 100.0), "3-D landmarks"),
    (np.full((100, 3), 100.0), "no landmark scheme has 100 points"),
])
def test_unusable_landmarks_fail_clearly(marks, match):
    with pytest.raises(ValueError, match=match):
        motion_features(marks, CROP)


def test_nan_landmarks_fail_clearly():
    face = frontal_face()
    face[POINTS["mediapipe468"].chin] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        motion_features(face, CROP)
