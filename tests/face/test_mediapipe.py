"""MediaPipe face backend on real sample files: anchors, detection, face mesh, segmentation."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from heser.face.mediapipe import (
    FULL_RANGE,
    MESH_LEFT_EYE,
    MESH_RIGHT_EYE,
    SHORT_RANGE,
    XNNPACK_NOTICE,
    MediaPipeFace,
    Roi,
    SelfieSegmenter,
    five_points_from_mesh,
    ssd_anchors,
    without_xnnpack_notice,
)
from heser.face.types import Face, FaceBackendError
from tests.conftest import ROOT, SAMPLE, SHARED

WEIGHTS = SHARED / "weights"


def rgb_image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(SAMPLE / "images" / name), cv2.IMREAD_COLOR)
    assert bgr is not None, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_frame(name: str, index: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(SAMPLE / "videos" / name))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, bgr = cap.read()
    cap.release()
    assert ok, name
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def backend() -> MediaPipeFace:
    return MediaPipeFace(WEIGHTS)


def assert_plausible_face(face: Face, shape: tuple[int, ...]) -> None:
    assert face.scheme == "mediapipe468"
    assert face.landmarks.shape == (468, 3) and face.landmarks.dtype == np.float32
    assert face.five_points.shape == (5, 2)
    x0, y0, x1, y1 = face.box
    left_eye, right_eye, nose, mouth_l, mouth_r = face.five_points
    for x, y in face.five_points:
        assert x0 <= x <= x1 and y0 <= y <= y1
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    eye_y = (left_eye[1] + right_eye[1]) / 2
    mouth_y = (mouth_l[1] + mouth_r[1]) / 2
    assert eye_y < nose[1] < mouth_y
    assert 0 < face.score <= 1
    h, w = shape[:2]
    assert face.five_points[:, 0].min() >= 0 and face.five_points[:, 0].max() < w
    assert face.five_points[:, 1].min() >= 0 and face.five_points[:, 1].max() < h


def test_short_range_anchors_match_mediapipe():
    reference = np.load(WEIGHTS / "mediapipe_pytorch" / "anchors_face.npy")
    anchors = ssd_anchors(SHORT_RANGE)
    assert anchors.shape == reference.shape == (896, 4)
    np.testing.assert_allclose(anchors, reference, atol=1e-6)


def test_full_range_anchors_fit_the_model(backend):
    anchors = ssd_anchors(FULL_RANGE)
    assert anchors.shape == (2304, 4)  # 48 x 48 cells, one anchor each
    assert np.allclose(anchors[:, 2:], 1.0)
    assert "face_detection_full_range_sparse.tflite" in backend.version


def test_one_face_in_a_photo(backend):
    image = rgb_image("dt_woman_D_uncropped.jpg")
    faces = backend(image)
    assert len(faces) == 1
    assert_plausible_face(faces[0], image.shape)
    # the five points are the mesh's own
    np.testing.assert_allclose(faces[0].five_points, five_points_from_mesh(faces[0].landmarks))


def test_one_face_in_a_video_frame(backend):
    frame = video_frame("vr4_woman_dark_hair_news.mp4", 30)
    faces = backend(frame)
    assert len(faces) == 1
    assert_plausible_face(faces[0], frame.shape)


def test_no_face_in_clothes_and_background(backend):
    image = rgb_image("dt_woman_D_uncropped.jpg")
    assert backend(np.ascontiguousarray(image[450:])) == []  # dress and background only
    assert backend(np.full((200, 300, 3), image[5, 5], np.uint8)) == []  # a flat patch of it


def test_two_portraits_side_by_side(backend):
    left = rgb_image("lp_d9jpg_woman_long_hair_yellow.jpg")
    right = rgb_image("lp_d12jpg_public_figure_A.jpg")
    pair = np.hstack([left, cv2.resize(right, (left.shape[1], left.shape[0]))])
    faces = backend(pair)
    assert len(faces) == 2
    centres = sorted(float(f.five_points[:, 0].mean()) for f in faces)
    half = left.shape[1]
    assert centres[0] < half < centres[1]
    for face in faces:
        assert_plausible_face(face, pair.shape)


def test_mesh_geometry(backend):
    image = rgb_image("lp_d38jpg_public_figure_B.jpg")
    (face,) = backend(image)
    lm = face.landmarks
    right_eye = lm[list(MESH_RIGHT_EYE), :2].mean(0)  # subject's right: image left
    left_eye = lm[list(MESH_LEFT_EYE), :2].mean(0)
    nose = lm[1, :2]
    assert right_eye[0] < nose[0] < left_eye[0]
    assert nose[1] > max(right_eye[1], left_eye[1])
    assert lm[152, 1] > lm[13, 1] > nose[1] > lm[10, 1]  # chin, lips, nose, forehead
    # the mesh spans about the detection box
    span = lm[:, :2].max(0) - lm[:, :2].min(0)
    assert 0.6 < span[0] / face.size < 1.6
    # z is in pixels like x: the nose tip stands out towards the camera (negative z)
    assert lm[1, 2] < lm[234, 2] and lm[1, 2] < lm[454, 2]


def test_grayscale_photo_still_has_one_face(backend):
    grey = cv2.cvtColor(rgb_image("lp_d8jpg_man_curly_hair.jpg"), cv2.COLOR_RGB2GRAY)
    faces = backend(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
    assert len(faces) == 1
    assert_plausible_face(faces[0], grey.shape)
    assert len(backend(grey)) == 1  # a 2-D array is accepted as well


def test_mesh_from_five_points_reproduces_the_mesh(backend):
    image = rgb_image("st_woman_B_happy1.png")
    (face,) = backend(image)
    mesh = backend.mesh_from_five_points(image, face.five_points)
    assert mesh.shape == (468, 3)
    err = np.abs(mesh[:, :2] - face.landmarks[:, :2]).mean()
    assert err < 0.02 * face.size


def test_face_presence_rejects_background(backend):
    image = rgb_image("dt_woman_D_uncropped.jpg")
    _, presence = backend.mesh(image, Roi(60.0, 560.0, 80.0, 0.0))  # bottom-left corner
    assert presence < 0.1
    (face,) = backend(image)
    _, presence = backend.mesh(image, Roi(*face.box.reshape(2, 2).mean(0), 1.5 * face.size, 0.0))
    assert presence > 0.9


def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(FaceBackendError, match="not found"):
        MediaPipeFace(tmp_path)


def test_selfie_segmentation_of_a_portrait():
    segmenter = SelfieSegmenter(WEIGHTS)
    image = rgb_image("dt_woman_D_uncropped.jpg")
    prob = segmenter(image)
    assert prob.shape == image.shape[:2] and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert prob[270, 260] > 0.9  # the face
    assert prob[10, 10] < 0.1 and prob[10, -10] < 0.1  # plain background, top corners


def test_creating_the_models_prints_nothing():
    # a fresh process: LiteRT announces its XNNPACK delegate only once per process
    script = ("import sys; from heser.face.mediapipe import MediaPipeFace, SelfieSegmenter; "
              "MediaPipeFace(sys.argv[1]); SelfieSegmenter(sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", script, str(WEIGHTS)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "XNNPACK" not in done.stderr


def test_only_the_xnnpack_notice_is_dropped_from_stderr(capfd):
    with without_xnnpack_notice():
        os.write(2, b"W: a real warning\n" + XNNPACK_NOTICE + b"E: a real error\n")
    assert capfd.readouterr().err == "W: a real warning\nE: a real error\n"
