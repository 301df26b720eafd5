"""Metrics against known values, on real sample photos and real MediaPipe face-mesh landmarks."""

import math

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from skimage.metrics import structural_similarity

from heser.face.mediapipe import MESH_LIPS_INNER, MESH_LIPS_OUTER
from heser.metrics import (
    MESH_EXPRESSION,
    MESH_RIGID,
    clip_stability,
    cosine_to_mean,
    descriptor_distance,
    euler_angles_deg,
    expression_error,
    flicker,
    head_rotation,
    identity_error,
    identity_retrieval_top1,
    identity_spread,
    landmark_jitter,
    pose_error_deg,
    psnr,
    same_person_share,
    ssim,
    summarize,
)
from tests.conftest import read_rgb, sample_path

PHOTO = "images/lp_d9jpg_woman_long_hair_yellow.jpg"
OTHER = "images/lp_d8jpg_man_curly_hair.jpg"
SIZE = 128
# Lower lip between the mouth corners, outer and inner contour (mesh indices).
MESH_LOWER_LIP = MESH_LIPS_OUTER[1:10] + MESH_LIPS_INNER[1:10]
# An iBUG-68 layout read off the mesh (jaw, brows, nose, eyes, mouth), to give the ibug68
# scheme a real 3-D face.
MESH_TO_IBUG68 = (
    127, 234, 132, 58, 172, 150, 176, 148, 152, 377, 400, 379, 397, 288, 361, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312, 308, 317, 14, 87,
)
IBUG_LOWER_LIP = (*range(55, 60), 65, 66, 67)
OPENINGS = (5, 10, 20)  # pixels


def _photo(name: str) -> np.ndarray:
    bgr = cv2.resize(cv2.imread(str(sample_path(name))), (SIZE, SIZE),
                     interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _box_mask(margin: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[margin:-margin, margin:-margin] = True
    return mask


# -- psnr / ssim -------------------------------------------------------------------------------

def test_identical_images_score_inf_and_one():
    image = _photo(PHOTO)
    assert psnr(image, image.copy()) == math.inf
    assert ssim(image, image.copy()) == pytest.approx(1.0)
    assert psnr(image, image.copy(), _box_mask(30)) == math.inf
    assert ssim(image, image.copy(), _box_mask(30)) == pytest.approx(1.0)


def test_psnr_of_a_uniform_offset():
    target = np.clip(_photo(PHOTO), 0, 245)
    assert psnr(target + 10, target) == pytest.approx(20 * math.log10(255 / 10))


def test_ssim_is_scikit_images_mean_ssim():
    a, b = _photo(PHOTO), _photo(OTHER)
    expected = structural_similarity(a, b, channel_axis=2, data_range=255)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert 0 < ssim(a, b) < 0.9


def test_masked_scores_see_only_the_masked_pixels():
    target = np.clip(_photo(PHOTO), 0, 245)
    result = target + 10
    mask = _box_mask(30)
    # outside the mask and beyond the 3 px reach of SSIM's 7x7 window: anything
    far = ~_box_mask(27)
    scrambled = result.copy()
    scrambled[far] = _photo(OTHER)[far]
    assert psnr(result, target, mask) == psnr(scrambled, target, mask)
    assert psnr(scrambled, target, mask) == pytest.approx(20 * math.log10(255 / 10))
    assert psnr(scrambled, target) < psnr(scrambled, target, mask)
    # (equal up to rounding: scikit-image filters the whole image)
    assert ssim(result, target, mask) == pytest.approx(ssim(scrambled, target, mask), abs=1e-12)
    _, ssim_map = structural_similarity(scrambled, target, channel_axis=2, data_range=255,
                                        full=True)
    assert ssim(scrambled, target, mask) == pytest.approx(ssim_map[mask].mean())
    assert ssim(scrambled, target) < ssim(scrambled, target, mask)


def test_empty_mask_gives_nan():
    a, b = _photo(PHOTO), _photo(OTHER)
    empty = np.zeros((SIZE, SIZE), np.uint8)
    assert math.isnan(psnr(a, b, empty)) and math.isnan(ssim(a, b, empty))


# -- identity ----------------------------------------------------------------------------------

def test_identity_error_is_one_minus_cosine_row_by_row():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(3, 128))
    other = codes.copy()
    free = rng.normal(size=128)
    other[1] = free - free @ codes[1] / (codes[1] @ codes[1]) * codes[1]  # orthogonal
    other[2] = -3 * codes[2]
    np.testing.assert_allclose(identity_error(codes, other), [0, 1, 2], atol=1e-12)
    np.testing.assert_allclose(identity_error(torch.tensor(codes[0]), torch.tensor(codes[0])),
                               [0], atol=1e-12)


# -- head pose ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def landmarks(face_backend) -> np.ndarray:
    """The real 468-point mesh (x, y, z in pixels) of a frontal sample photo."""
    (face,) = face_backend(read_rgb(PHOTO))
    assert face.scheme == "mediapipe468"
    return face.landmarks.astype(np.float64)


def _moved(points: np.ndarray, rotation: np.ndarray, scale: float = 1.7,
           shift: tuple[float, float, float] = (40.0, -25.0, 7.0)) -> np.ndarray:
    """``points`` turned by ``rotation`` about their centre, scaled and translated."""
    centre = points.mean(axis=0)
    return (points - centre) @ rotation.T * scale + centre + np.asarray(shift)


def _euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    return Rotation.from_euler("YXZ", [yaw, pitch, roll], degrees=True).as_matrix()


@pytest.mark.parametrize("angles", [(10, 0, 0), (0, -12, 0), (25, -15, 10)])
def test_pose_error_is_the_angle_of_a_known_rotation(landmarks, angles):
    rotation = _euler(*angles)
    expected = math.degrees(math.acos((np.trace(rotation) - 1) / 2))
    moved = _moved(landmarks, rotation)
    assert pose_error_deg(landmarks, moved) == pytest.approx(expected, abs=0.01)
    # b is aligned onto a: the inverse of the rotation that made b; a onto b gives it back
    np.testing.assert_allclose(head_rotation(landmarks, moved) @ rotation, np.eye(3), atol=1e-9)
    assert euler_angles_deg(head_rotation(moved, landmarks)) == pytest.approx(angles, abs=1e-6)


def test_same_pose_gives_zero_whatever_the_mouth(landmarks):
    assert pose_error_deg(landmarks, landmarks.copy()) == pytest.approx(0, abs=1e-6)
    open_mouth = landmarks.copy()
    open_mouth[list(MESH_LOWER_LIP), 1] += 20
    assert pose_error_deg(landmarks, open_mouth) == pytest.approx(0, abs=1e-6)


def test_a_photo_rolled_in_the_image_plane_reads_as_roll(face_backend, landmarks):
    image = read_rgb(PHOTO)
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)  # 20 degrees anticlockwise
    (face,) = face_backend(cv2.warpAffine(image, matrix, (w, h),
                                          borderMode=cv2.BORDER_REFLECT))
    rolled = face.landmarks.astype(np.float64)
    assert pose_error_deg(landmarks, rolled) == pytest.approx(20, abs=1.0)
    yaw, pitch, roll = euler_angles_deg(head_rotation(landmarks, rolled))
    assert roll == pytest.approx(20, abs=1.0)  # clockwise brings it back
    assert abs(yaw) < 2 and abs(pitch) < 2
    # the same face re-detected: landmark noise only
    assert expression_error(landmarks, rolled, "mediapipe468") < 0.02


def test_2d_landmarks_are_refused(landmarks):
    flat = landmarks[:, :2]
    with pytest.raises(ValueError, match="3-D landmarks"):
        pose_error_deg(flat, flat)
    with pytest.raises(ValueError, match="3-D landmarks"):
        expression_error(flat, flat, "mediapipe468")


def test_unknown_or_mismatched_scheme_is_refused(landmarks):
    with pytest.raises(ValueError, match="no landmark scheme has 100 points"):
        pose_error_deg(landmarks[:100], landmarks[:100])
    with pytest.raises(ValueError, match="do not fit scheme 'ibug68'"):
        expression_error(landmarks, landmarks, "ibug68")


# -- expression --------------------------------------------------------------------------------

def _open_mouth(points: np.ndarray, lower_lip: tuple[int, ...], pixels: float) -> np.ndarray:
    out = points.copy()
    out[list(lower_lip), 1] += pixels  # image y points down
    return out


def test_expression_error_ignores_pose_position_and_scale(landmarks):
    moved = _moved(landmarks, _euler(20, 10, -5), scale=0.6)
    assert expression_error(landmarks, moved, "mediapipe468") == pytest.approx(0, abs=1e-9)


def test_expression_error_of_an_opening_mouth(landmarks):
    assert not set(MESH_LOWER_LIP) & set(MESH_RIGID)
    corners_y = landmarks[[61, 291], 1].max()
    assert (landmarks[list(MESH_LOWER_LIP), 1] > corners_y).all()  # they are the lower lip
    inter_ocular = np.linalg.norm(landmarks[33] - landmarks[263])
    errors = [expression_error(landmarks, _open_mouth(landmarks, MESH_LOWER_LIP, d),
                               "mediapipe468") for d in OPENINGS]
    # nothing rigid moved, so the fit is the identity: 18 of the 92 points moved by d
    expected = [18 * d / (len(MESH_EXPRESSION) * inter_ocular) for d in OPENINGS]
    np.testing.assert_allclose(errors, expected, rtol=1e-9)
    assert len(MESH_EXPRESSION) == 92
    # 20 px (a seventh of the eye distance) is well above re-detection noise (< 0.02, above)
    assert errors[-1] > 0.025


def test_ibug68_scheme(landmarks):
    ibug = landmarks[list(MESH_TO_IBUG68)]
    rotation = _euler(-8, 14, 3)
    expected = math.degrees(math.acos((np.trace(rotation) - 1) / 2))
    assert pose_error_deg(ibug, _moved(ibug, rotation)) == pytest.approx(expected, abs=0.01)
    assert expression_error(ibug, _moved(ibug, rotation), "ibug68") == pytest.approx(0, abs=1e-9)
    opened = expression_error(ibug, _open_mouth(ibug, IBUG_LOWER_LIP, 10), "ibug68")
    inter_ocular = np.linalg.norm(ibug[36] - ibug[45])
    assert opened == pytest.approx(8 * 10 / (42 * inter_ocular))  # 8 of 42 points moved
    assert pose_error_deg(ibug, _open_mouth(ibug, IBUG_LOWER_LIP, 10)) == pytest.approx(
        0, abs=1e-6)


# -- aggregation -------------------------------------------------------------------------------

def test_summarize_leaves_out_and_counts_nan_and_infinite_values_apart():
    # the inf is an identical pair's PSNR: counted as such, never capped into the mean
    stats = summarize([1.0, 2.0, math.nan, 3.0, math.inf])
    assert stats == {"mean": 2.0, "median": 2.0, "std": pytest.approx(math.sqrt(2 / 3)),
                     "count": 3, "dropped": 1, "infinite": 1}
    empty = summarize([math.nan, math.nan])
    assert empty["count"] == 0 and empty["dropped"] == 2 and math.isnan(empty["mean"])
    a = _photo(PHOTO)
    assert summarize([psnr(a, a.copy())])["infinite"] == 1


# -- identity measurement (descriptors of FaceRes or dlib) ---------------------------------------

def test_cosine_to_mean_normalises_each_source_before_averaging():
    # sources along x (length 2) and y (length 5): their identity is the diagonal (1, 1) / sqrt 2
    sources = np.array([[2.0, 0.0], [0.0, 5.0]])
    rows = np.array([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, -1.0]])
    half = math.sqrt(0.5)
    np.testing.assert_allclose(cosine_to_mean(rows, sources), [half, half, 1.0, -1.0])
    # one [D] descriptor is one row; tensors are accepted
    assert cosine_to_mean(torch.tensor([3.0, 4.0]), torch.tensor([[0.0, 1.0]])) == (
        pytest.approx([0.8]))
    with pytest.raises(ValueError, match="dimensions"):
        cosine_to_mean(rows, np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-zero"):
        cosine_to_mean(np.zeros((1, 2)), sources)


def test_identity_retrieval_top1_counts_nearest_gallery_identities():
    gallery = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0]), "c": np.array([-1.0, 0.0])}
    queries = np.array([[0.9, 0.2], [0.3, 0.8], [0.8, 0.1], [-0.5, -0.2]])
    # nearest: a, b, a, c; identities a, b, b, c -> 3 of 4 right; chance 1/3
    top1, chance = identity_retrieval_top1(queries, ["a", "b", "b", "c"], gallery)
    assert (top1, chance) == (0.75, pytest.approx(1 / 3))
    # cosine, not Euclidean: a long vector along b's direction is still b
    assert identity_retrieval_top1(np.array([[0.1, 50.0]]), ["b"], gallery)[0] == 1.0
    with pytest.raises(ValueError, match=r"\['z'\] are not in the gallery"):
        identity_retrieval_top1(queries[:1], ["z"], gallery)
    with pytest.raises(ValueError, match="4 query descriptors but 2 identities"):
        identity_retrieval_top1(queries, ["a", "b"], gallery)


def test_descriptor_distance_and_same_person_share_under_dlibs_threshold():
    a = np.array([[0.0, 0.0], [1.0, 1.0], [0.3, 0.0]])
    b = np.array([[0.3, 0.4], [1.0, 1.0], [0.0, 0.6]])
    distances = descriptor_distance(a, b)
    np.testing.assert_allclose(distances, [0.5, 0.0, math.sqrt(0.09 + 0.36)])
    assert descriptor_distance(np.array([3.0, 0.0]), np.array([0.0, 4.0])) == pytest.approx([5])
    # 0.5 and 0 are under 0.6; 0.6708 is not, and a distance of exactly 0.6 is not either
    assert same_person_share(distances, 0.6) == pytest.approx(2 / 3)
    assert same_person_share([0.6], 0.6) == 0.0
    assert math.isnan(same_person_share([], 0.6))


# -- video stability ---------------------------------------------------------------------------

def test_flicker_is_the_mean_absolute_change_inside_either_frames_region():
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1, 0, 0] = 30  # step 0->1: one pixel changes by 30 in every channel
    frames[2] = frames[1]
    frames[2, 1, 1] = (60, 0, 0)  # step 1->2: one pixel changes by 60 in one channel
    regions = np.zeros((3, 2, 2), bool)
    regions[0, 0, 0] = True
    regions[1, 0, 1] = True  # step 0->1: pixels (0,0), (0,1) -> 3 * 30 / (2 * 3) = 15
    regions[2, 1, 1] = True  # step 1->2: pixels (0,1), (1,1) -> 60 / (2 * 3) = 10
    assert flicker(frames, regions) == pytest.approx((15 + 10) / 2)
    assert flicker(np.repeat(frames[:1], 4, axis=0), np.ones((4, 2, 2), bool)) == 0.0
    assert math.isnan(flicker(frames[:1], regions[:1]))
    assert math.isnan(flicker(frames, np.zeros_like(regions)))
    with pytest.raises(ValueError, match="regions"):
        flicker(frames, regions[:, :1])


def test_identity_spread_is_the_std_over_frames_without_missing_ones():
    assert identity_spread([0.5, 0.7, math.nan, 0.6]) == pytest.approx(math.sqrt(0.02 / 3))
    assert identity_spread([0.4, 0.4, 0.4]) == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(identity_spread([0.4, math.nan]))


def test_landmark_jitter_is_acceleration_in_inter_ocular_units(landmarks):
    face = landmarks  # real 468-point mesh landmarks, outer eye corners 33 and 263
    inter_ocular = np.linalg.norm(face[33, :2] - face[263, :2])
    # a uniform motion (even with z changing) has no acceleration
    moving = [face + t * np.array([2.0, 1.0, 5.0]) for t in range(4)]
    assert landmark_jitter(moving) == pytest.approx(0.0, abs=1e-12)
    # back and forth by 3 px in x: |p2 - 2 p1 + p0| = 6 px at every point
    shaking = [face, face + [3.0, 0, 0], face]
    assert landmark_jitter(shaking) == pytest.approx(6.0 / inter_ocular)
    # frames without a face break the runs of three; none left gives nan
    assert landmark_jitter([face, None, *shaking, None]) == pytest.approx(6.0 / inter_ocular)
    assert math.isnan(landmark_jitter([face, None, face, face]))


def test_clip_stability_gives_each_number_for_the_swap_and_the_target_alike(landmarks):
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    frames[1] = 30
    still = np.zeros_like(frames)
    regions = np.ones((3, 2, 2), bool)
    shaking = [landmarks, landmarks + [3.0, 0, 0], landmarks]
    numbers = clip_stability(frames, still, regions, shaking, [landmarks, None, landmarks],
                             np.array([0.5, 0.7, 0.6]), np.array([0.2, 0.2, 0.2]))
    inter_ocular = np.linalg.norm(landmarks[33, :2] - landmarks[263, :2])
    assert numbers["swapped"] == {"flicker": 30.0, "identity_spread":
                                  pytest.approx(math.sqrt(0.02 / 3)),
                                  "faceres_cosine": pytest.approx(0.6),
                                  "landmark_jitter": pytest.approx(6.0 / inter_ocular),
                                  "face_found": 1.0}
    target = numbers["target"]  # no face in the middle frame: no run of three, jitter nan
    assert math.isnan(target.pop("landmark_jitter"))
    assert target == {"flicker": 0.0, "identity_spread": pytest.approx(0, abs=1e-15),
                      "faceres_cosine": pytest.approx(0.2), "face_found": pytest.approx(2 / 3)}
