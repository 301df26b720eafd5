"""FAN face backend: offline checkpoint check, 68 -> 5 points, and a real run when weights exist."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch.hub

from heser.face import fan
from heser.face.fan import FanFace, checkpoint_files, five_points_from_ibug68, missing_checkpoints
from heser.face.types import FaceBackendError

SAMPLE_PHOTO = Path("/work/shared/data/sample/images/dt_woman_D_uncropped.jpg")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # undo any torch.hub.set_dir()
    return tmp_path / "torch" / "hub" / "checkpoints"


def _ibug68(offset: float = 0.0) -> np.ndarray:
    """A crude frontal 68-point layout (image x grows to the right)."""
    pts = np.zeros((68, 2), np.float32)
    pts[36:42] = (100 + offset, 100)
    pts[42:48] = (200 + offset, 100)
    pts[30] = (150 + offset, 150)
    pts[48] = (115 + offset, 200)
    pts[54] = (185 + offset, 200)
    pts[36, 0] -= 10  # the eye mean, not a single point, is used
    pts[39, 0] += 10
    return pts


def test_checkpoint_names_come_from_installed_package():
    files = checkpoint_files()
    assert files["2DFAN-4"].startswith("2DFAN4") and files["2DFAN-4"].endswith(".pth.tar")
    assert files["s3fd"].startswith("s3fd") and files["s3fd"].endswith(".pth")


def test_missing_weights_raise_backend_error(empty_torch_home):
    with pytest.raises(FaceBackendError) as err:
        FanFace()
    message = str(err.value)
    for name in checkpoint_files().values():
        assert name in message
    assert str(empty_torch_home) in message
    assert "mediapipe" in message
    assert err.value.__cause__ is None


def test_allow_download_failure_is_a_backend_error(empty_torch_home, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    import face_alignment.utils

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(face_alignment.utils, "download_url_to_file", offline)
    with pytest.raises(FaceBackendError, match="mediapipe") as err:
        FanFace(allow_download=True)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_five_points_from_ibug68_are_ordered_by_image_x():
    pts = _ibug68()
    five = five_points_from_ibug68(pts)
    assert five.dtype == np.float32 and five.shape == (5, 2)
    np.testing.assert_allclose(five, [[100, 100], [200, 100], [150, 150], [115, 200], [185, 200]])
    mirrored = pts.copy()
    mirrored[:, 0] = 300 - mirrored[:, 0]  # iBUG indices now sit on the other image side
    np.testing.assert_allclose(five_points_from_ibug68(mirrored), five)


class _StubAligner:
    """Stands in for face_alignment.FaceAlignment.get_landmarks_from_image."""

    def __init__(self, result):
        self.result = result

    def get_landmarks_from_image(self, image, return_bboxes=False):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        return self.result


def _with_stub(empty_torch_home, monkeypatch, result) -> FanFace:
    empty_torch_home.mkdir(parents=True)
    for name in checkpoint_files().values():
        (empty_torch_home / name).write_bytes(b"")
    assert missing_checkpoints() == []
    monkeypatch.setattr(fan, "_build_aligner", lambda *a, **k: _StubAligner(result))
    return FanFace()


def test_call_builds_faces(empty_torch_home, monkeypatch):
    boxes = [np.array([80, 60, 230, 240, 0.93]), np.array([-20, 10, 330, 260, 0.99])]
    backend = _with_stub(empty_torch_home, monkeypatch,
                         ([_ibug68(), _ibug68(offset=5)], None, boxes))
    assert backend.name == "fan" and "2DFAN4" in backend.version
    faces = backend(np.zeros((250, 300, 3), np.uint8))
    assert [f.score for f in faces] == pytest.approx([0.99, 0.93])  # best first
    top = faces[0]
    np.testing.assert_allclose(top.box, [0, 10, 300, 250])  # clipped to the image
    assert top.scheme == "ibug68"
    assert top.landmarks.shape == (68, 2) and top.landmarks.dtype == np.float32
    np.testing.assert_allclose(top.five_points[0], [105, 100])


def test_call_without_faces_returns_empty_list(empty_torch_home, monkeypatch):
    backend = _with_stub(empty_torch_home, monkeypatch, (None, None, None))
    assert backend(np.zeros((64, 64, 3), np.uint8)) == []


@pytest.mark.skipif(bool(missing_checkpoints()),
                    reason="face_alignment checkpoints (2DFAN4, s3fd) are not in the torch hub "
                           "cache; this machine is offline")
def test_real_fan_on_sample_photo():
    bgr = cv2.imread(str(SAMPLE_PHOTO), cv2.IMREAD_COLOR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    backend = FanFace(device="cpu")
    faces = backend(rgb)
    assert len(faces) >= 1
    face = faces[0]
    assert face.score > 0.9 and face.scheme == "ibug68"
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    x0, y0, x1, y1 = face.box
    assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]
    left_eye, right_eye, nose, mouth_l, mouth_r = face.five_points
    # a frontal portrait: eyes near (210, 222) and (312, 222), nose ~(262, 275), mouth ~y 325
    np.testing.assert_allclose(left_eye, [210, 222], atol=30)
    np.testing.assert_allclose(right_eye, [312, 222], atol=30)
    assert left_eye[1] < nose[1] < mouth_l[1] and nose[1] < mouth_r[1]
    assert mouth_l[0] < nose[0] < mouth_r[0]
    assert all(x0 <= p[0] <= x1 and y0 <= p[1] <= y1 for p in face.five_points)
    assert backend(np.full((240, 320, 3), 127, np.uint8)) == []


def test_corrupt_weights_raise_backend_error(empty_torch_home):
    empty_torch_home.mkdir(parents=True)
    for name in checkpoint_files().values():
        (empty_torch_home / name).write_bytes(b"truncated")
    with pytest.raises(FaceBackendError, match="could not load") as err:
        FanFace()
    assert err.value.__cause__ is None and err.value.__suppress_context__
