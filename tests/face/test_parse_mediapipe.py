"""MediaPipe parser on real aligned face crops: mesh regions, hair, background, label values."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from heser.face.labels import Region
from heser.face.mediapipe import (
    MESH_CHIN,
    MESH_LEFT_EYE,
    MESH_MOUTH_CORNERS,
    MESH_OVAL_TOP,
    MESH_RIGHT_EYE,
    MediaPipeFace,
)
from heser.face.parse_mediapipe import (
    LIP_GAP_PAIRS,
    PRODUCED_REGIONS,
    MediaPipeParser,
    face_frame,
    five_points_from_landmarks,
    mouth_is_open,
    void_border,
)
from tests.conftest import SAMPLE, SHARED

WEIGHTS = SHARED / "weights"
CROPS = ("dt_woman_D_crop256.png", "dt_man_E_crop256.png", "st_woman_B_happy1.png")
SHORT_HAIR = ("dt_man_E_crop256.png", "st_woman_B_happy1.png")


def rgb_image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(SAMPLE / "images" / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def backend() -> MediaPipeFace:
    return MediaPipeFace(WEIGHTS)


@pytest.fixture(scope="module")
def parser() -> MediaPipeParser:
    return MediaPipeParser(WEIGHTS)


@pytest.fixture(scope="module")
def parsed(backend, parser) -> dict[str, tuple[np.ndarray, object, np.ndarray]]:
    """name -> (crop, face, label map) for the real face crops."""
    out = {}
    for name in CROPS:
        crop = rgb_image(name)
        (face,) = backend(crop)
        out[name] = (crop, face, parser(crop, face.landmarks, face.scheme))
    return out


def at(labels: np.ndarray, point: np.ndarray) -> int:
    return int(labels[int(round(point[1])), int(round(point[0]))])


@pytest.mark.parametrize("name", CROPS)
def test_mesh_regions_land_on_the_features(parsed, name):
    crop, face, labels = parsed[name]
    assert labels.shape == crop.shape[:2] and labels.dtype == np.uint8
    lm = face.landmarks
    assert at(labels, lm[1]) == Region.NOSE
    assert at(labels, lm[list(MESH_RIGHT_EYE), :2].mean(0)) == Region.EYE
    assert at(labels, lm[list(MESH_LEFT_EYE), :2].mean(0)) == Region.EYE
    assert at(labels, (lm[0] + lm[17]) / 2) in (Region.LIP, Region.TOOTH)  # mid-mouth
    assert at(labels, lm[0]) == Region.LIP  # upper lip
    # cheeks are face skin
    for idx in (50, 280):
        assert at(labels, lm[idx]) == Region.FACE
    # every region of the inner face is there
    for region in (Region.FACE, Region.BROW, Region.EYE, Region.NOSE, Region.LIP):
        assert (labels == region).sum() > 20, region.name


@pytest.mark.parametrize("name", CROPS)
def test_label_values_are_valid_and_producible(parsed, name):
    _, _, labels = parsed[name]
    present = {Region(int(v)) for v in np.unique(labels)}  # raises on an invalid id
    assert present <= PRODUCED_REGIONS
    assert Region.HAT not in present and Region.GLASSES not in present


@pytest.mark.parametrize("name", CROPS)
def test_hair_above_the_forehead(parsed, name):
    crop, face, labels = parsed[name]
    lm = face.landmarks
    assert (labels == Region.HAIR).sum() > 0.03 * labels.size
    # straight above the top of the face oval there is hair
    top = lm[MESH_OVAL_TOP, :2]
    chin = lm[MESH_CHIN, :2]
    above = top + 0.25 * (top - chin)
    x, y = int(round(above[0])), int(round(above[1]))
    patch = labels[max(y - 3, 0):y + 4, x - 3:x + 4]
    assert (patch == Region.HAIR).mean() > 0.5


@pytest.mark.parametrize("name", SHORT_HAIR)
def test_short_hair_lies_above_the_eyes(parsed, name):
    _, face, labels = parsed[name]
    eye_y = face.five_points[:2, 1].mean()
    ys, _ = np.nonzero(labels == Region.HAIR)
    assert (ys < eye_y).mean() > 0.6


@pytest.mark.parametrize("name", CROPS)
def test_background_at_the_top_corners(parsed, name):
    # these crops show plain studio background above both shoulders
    _, _, labels = parsed[name]
    for corner in (labels[:6, :6], labels[:6, -6:]):
        assert (corner == Region.BACKGROUND).all()


@pytest.mark.parametrize("name", CROPS)
def test_neck_below_the_chin(parsed, name):
    _, face, labels = parsed[name]
    chin = face.landmarks[MESH_CHIN, :2]
    mouth = face.landmarks[13, :2]
    below = chin + 0.25 * (chin - mouth)
    x, y = int(round(below[0])), int(round(below[1]))
    if y < labels.shape[0]:
        assert labels[y, x] in (Region.NECK, Region.FACE)
    assert (labels == Region.NECK).sum() > 0


def test_closed_mouth_has_no_teeth_open_smile_has(parsed):
    _, _, closed = parsed["dt_woman_D_crop256.png"]
    assert (closed == Region.TOOTH).sum() == 0
    _, _, smile = parsed["st_woman_B_happy1.png"]  # an open-mouthed smile
    assert (smile == Region.TOOTH).sum() > 20


def test_other_landmark_schemes_go_through_five_points(parsed, parser):
    crop, face, labels = parsed["dt_man_E_crop256.png"]
    five = parser(crop, face.five_points, "five")
    assert (five == labels).mean() > 0.95
    # an ibug68-ordered array: eyes 36-41 / 42-47, nose tip 30, mouth corners 48 / 54
    lm = face.landmarks[:, :2]
    ibug = np.zeros((68, 2), np.float32)
    ibug[36:42] = lm[[33, 160, 158, 133, 153, 144]]
    ibug[42:48] = lm[[362, 385, 387, 263, 373, 380]]
    ibug[30], ibug[48], ibug[54] = lm[1], lm[61], lm[291]
    pts = five_points_from_landmarks(ibug, "ibug68")
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]
    from_ibug = parser(crop, ibug, "ibug68")
    assert (from_ibug == labels).mean() > 0.9
    with pytest.raises(ValueError):
        parser(crop, lm[:30], "unknown")


def test_black_border_of_a_crop_is_background(backend, parser):
    # a crop window partly outside its source image: align.warp_crop pads with black
    crop = rgb_image("dt_man_E_crop256.png")
    padded = np.zeros_like(crop)
    padded[:, 40:] = crop[:, :-40]
    (face,) = backend(padded)
    labels = parser(padded, face.landmarks, face.scheme)
    assert void_border(padded)[:, :38].all()
    assert (labels[:, :38] == Region.BACKGROUND).all()
    assert at(labels, face.landmarks[1]) == Region.NOSE


def test_grayscale_crop_parses(backend, parser):
    grey = cv2.cvtColor(rgb_image("st_woman_B_happy1.png"), cv2.COLOR_RGB2GRAY)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    (face,) = backend(rgb)
    labels = parser(rgb, face.landmarks, face.scheme)
    assert at(labels, face.landmarks[1]) == Region.NOSE
    assert {Region(int(v)) for v in np.unique(labels)} <= PRODUCED_REGIONS


def test_face_frame_turns_with_the_face(parsed):
    crop, face, _ = parsed["dt_man_E_crop256.png"]
    mesh = face.landmarks[:, :2].astype(np.float64)
    h, w = crop.shape[:2]
    upright = face_frame(mesh, (h, w))
    assert upright.v_top < upright.v_brow < 0 < upright.v_mouth < upright.v_chin
    assert 0.5 < upright.face_w / upright.face_h < 1.2
    # the same face turned a quarter clockwise: pixel (x, y) goes to (h - 1 - y, x)
    turned = face_frame(np.stack([h - 1 - mesh[:, 1], mesh[:, 0]], axis=1), (w, h))
    for name in ("v_top", "v_brow", "v_mouth", "v_chin", "face_w", "face_h"):
        assert getattr(turned, name) == pytest.approx(getattr(upright, name), abs=1e-6), name
    np.testing.assert_allclose(turned.v, np.rot90(upright.v, -1), atol=1e-3)
    np.testing.assert_allclose(turned.ur, np.rot90(upright.ur, -1), atol=1e-3)


def test_mouth_is_open_from_the_inner_lip_gap(parsed):
    closed = parsed["dt_woman_D_crop256.png"][1].landmarks[:, :2]
    assert not mouth_is_open(closed)
    assert mouth_is_open(parsed["st_woman_B_happy1.png"][1].landmarks[:, :2])
    # the closed lips parted by a fifth of the mouth's width (the crop is upright: down is +y)
    parted = closed.copy()
    width = np.linalg.norm(closed[MESH_MOUTH_CORNERS[0]] - closed[MESH_MOUTH_CORNERS[1]])
    parted[[lower for _, lower in LIP_GAP_PAIRS], 1] += 0.2 * width
    assert mouth_is_open(parted)
