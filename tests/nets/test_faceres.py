"""heser.nets.faceres against an independent numpy execution of the same TF.js graph
(tests/nets/tfjs_numpy.py) on real sample faces, its separation of the sample's people, and
clear errors for damaged model files."""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import heser.nets.faceres as faceres
from heser.data.video_io import VideoReader
from heser.face.align import warp_crop, window_from_points
from heser.metrics import identity_retrieval_top1
from heser.nets.faceres import (
    DESCRIPTOR_NODE,
    INPUT_SIZE,
    MODEL_JSON,
    face_windows,
    load_faceres,
    read_tfjs_weights,
    same_padding,
)
from tests.conftest import PARAMS, read_rgb, sample_path
from tests.nets.tfjs_numpy import load_constants, run_graph

# (identity, sample file) of people with several sources: frames of different videos (MEAD:
# different emotions; HDTF: two clips) or two photos
MULTI_SOURCE = [
    ("mead_M030", "videos/mead_M030_front_neutral_level1_001.mp4"),
    ("mead_M030", "videos/mead_M030_front_happy_level3_001.mp4"),
    ("mead_M030", "videos/mead_M030_front_sad_level3_001.mp4"),
    ("mead_W009", "videos/mead_W009_front_neutral_level1_001.mp4"),
    ("mead_W009", "videos/mead_W009_front_happy_level3_001.mp4"),
    ("mead_W009", "videos/mead_W009_front_sad_level3_001.mp4"),
    ("hdtf_aoc", "videos/hdtf_aoc_WDA_AlexandriaOcasioCortez_000.mp4"),
    ("hdtf_aoc", "videos/hdtf_aoc_vr3.mp4"),
    ("dt_woman_D", "images/dt_woman_D_crop256.png"),
    ("dt_woman_D", "images/dt_woman_D_uncropped.jpg"),
]
# other people, one source each
SINGLE_SOURCE = [
    ("dt_man_E", "images/dt_man_E_crop256.png"),
    ("dt_woman_F", "images/dt_woman_F_crop256.png"),
    ("st_woman_B", "images/st_woman_B_happy1.png"),
    ("lp_d8jpg_man_curly_hair", "images/lp_d8jpg_man_curly_hair.jpg"),
    ("lp_d9jpg_woman", "images/lp_d9jpg_woman_long_hair_yellow.jpg"),
    ("public_figure_A", "images/lp_d12jpg_public_figure_A.jpg"),
    ("lp_d3_woman_brown_hair", "videos/lp_d3_woman_brown_hair.mp4"),
    ("vr1_young_asian_man_suit", "videos/vr1_young_asian_man_suit.mp4"),
]


def _head_crop(face_backend, rgb: np.ndarray) -> np.ndarray:
    """The project's head crop (crop stage geometry) of the largest face."""
    face = max(face_backend(rgb), key=lambda f: f.area)
    window = window_from_points(face.five_points, PARAMS.crop.scale, PARAMS.crop.center_shift)
    return warp_crop(rgb, window, PARAMS.crop.size)[0]


def _frames(name: str, count: int) -> list[np.ndarray]:
    if name.startswith("images/"):
        return [read_rgb(name)]
    return [rgb for _, rgb in VideoReader(sample_path(name)).frames(stride=30, max_frames=count)]


@pytest.fixture(scope="module")
def model_json(weights_dir: Path) -> Path:
    return weights_dir / MODEL_JSON


@pytest.fixture(scope="module")
def net(weights_dir: Path) -> faceres.FaceRes:
    return load_faceres(weights_dir)


@pytest.fixture(scope="module")
def crops(face_backend) -> list[tuple[str, str, np.ndarray]]:
    """(identity, source file, 256 px head crop): two frames per video, one per photo."""
    return [(identity, name, _head_crop(face_backend, rgb))
            for identity, name in MULTI_SOURCE + SINGLE_SOURCE
            for rgb in _frames(name, 2 if (identity, name) in MULTI_SOURCE else 1)]


def _ours(net: faceres.FaceRes, faces: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(faces).double().numpy()


def test_same_padding_is_tensorflows():
    assert same_padding(224, 3, 2) == (0, 1)  # the extra pixel after, unlike PyTorch's padding=1
    assert same_padding(112, 3, 1) == (1, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(14, 1, 1) == (0, 0)


def test_descriptors_match_the_numpy_graph_on_real_faces(net, model_json, crops, monkeypatch):
    picks = [crops[i][2] for i in (0, 6, 12, 16, 20, 24)]  # M030, W009, AOC, D, B, lp_d3
    faces = face_windows(torch.from_numpy(np.stack(picks)).permute(0, 3, 1, 2).float())
    reference = run_graph(model_json, {"input_1": faces.permute(0, 2, 3, 1).double().numpy()},
                          [DESCRIPTOR_NODE])[DESCRIPTOR_NODE]
    ours = _ours(net, faces)
    assert ours.shape == reference.shape == (len(picks), 1024)
    scale = np.abs(reference).max()
    assert scale > 0.5 and (reference >= 0).all()  # a mean of ReLU6 outputs
    assert np.abs(ours - reference).max() <= 1e-4 * scale
    # and the test can tell: PyTorch's symmetric padding of the stride-2 layers is way off
    monkeypatch.setattr(faceres, "same_padding", lambda size, k, s: ((k - 1) // 2,) * 2)
    assert np.abs(_ours(net, faces) - reference).max() > 100 * 1e-4 * scale


def test_weights_are_read_as_the_interpreter_reads_them(model_json):
    ours, theirs = read_tfjs_weights(model_json), load_constants(model_json)
    assert ours.keys() == theirs.keys() and len(ours) == 128
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name].astype(ours[name].dtype), name)


def test_same_person_cosines_are_clearly_above_different_people(net, crops):
    identities = [identity for identity, _, _ in crops]
    sources = [name for _, name, _ in crops]
    descriptors = net.identity_descriptor(np.stack([crop for _, _, crop in crops]))
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-5)
    cosine = descriptors @ descriptors.T
    pairs = list(itertools.combinations(range(len(crops)), 2))
    # same person in different videos or photos; different people
    same = np.array([cosine[i, j] for i, j in pairs
                     if identities[i] == identities[j] and sources[i] != sources[j]])
    different = np.array([cosine[i, j] for i, j in pairs if identities[i] != identities[j]])
    print(f"\nFaceRes cosine, same person ({len(same)} pairs): mean {same.mean():.3f} "
          f"min {same.min():.3f}; different people ({len(different)} pairs): mean "
          f"{different.mean():.3f} max {different.max():.3f}")
    assert same.mean() > different.mean() + 0.25
    assert (same > np.quantile(different, 0.95)).mean() >= 0.9

    # retrieval: a gallery of every identity from its first source; queries from the others
    gallery, queries, query_identity = {}, [], []
    for descriptor, identity, source in zip(descriptors, identities, sources):
        first = next(name for i, name in MULTI_SOURCE + SINGLE_SOURCE if i == identity)
        if source == first:
            gallery.setdefault(identity, []).append(descriptor)
        else:
            queries.append(descriptor)
            query_identity.append(identity)
    gallery = {identity: np.mean(found, axis=0) for identity, found in gallery.items()}
    top1, chance = identity_retrieval_top1(np.stack(queries), query_identity, gallery)
    print(f"retrieval top-1 {top1:.3f} over {len(queries)} queries, chance {chance:.3f}")
    assert chance == 1 / 12
    assert top1 >= 0.9


def test_identity_descriptor_takes_arrays_and_tensors_of_any_crop_size(net, crops):
    crop = crops[0][2]
    from_array = net.identity_descriptor(crop)
    from_tensor = net.identity_descriptor(torch.from_numpy(crop).permute(2, 0, 1)[None].float())
    assert from_array.shape == (1, 1024) and from_array.dtype == np.float32
    np.testing.assert_allclose(from_array, from_tensor, atol=1e-6)
    # the same head at 512 px: the window is a fraction of the side, so nearly the same code
    larger = torch.nn.functional.interpolate(
        torch.from_numpy(crop).permute(2, 0, 1)[None].float(), size=512, mode="bicubic")
    assert float(net.identity_descriptor(larger.clamp(0, 255))[0] @ from_array[0]) > 0.97


def test_the_net_is_frozen_and_checks_its_input(net):
    assert not net.train().training and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match=str(INPUT_SIZE)):
        net(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="RGB head crops"):
        net.identity_descriptor(np.zeros((2, 64, 64)))


def _copy_model(model_json: Path, tmp_path: Path) -> Path:
    shutil.copy(model_json.with_suffix(".bin"), tmp_path / "faceres.bin")
    return Path(shutil.copy(model_json, tmp_path / "faceres.json"))


def _edit(path: Path, change) -> None:
    model = json.loads(path.read_text())
    change(model)
    path.write_text(json.dumps(model))


def _node(model: dict, name: str) -> dict:
    return next(n for n in model["modelTopology"]["node"] if n["name"] == name)


def test_damaged_model_files_raise_errors_naming_them(model_json, tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / MODEL_JSON))):
        load_faceres(tmp_path)
    cases = {
        "not_json": lambda path: path.write_text("{"),
        "truncated_bin": lambda path: path.with_suffix(".bin").write_bytes(
            path.with_suffix(".bin").read_bytes()[:-10]),
        "long_bin": lambda path: path.with_suffix(".bin").write_bytes(
            path.with_suffix(".bin").read_bytes() + b"\0\0"),
        "other_op": lambda path: _edit(path, lambda m: _node(
            m, "conv_dw_5_relu/Relu").update(op="Elu")),
        "clip_at_0": lambda path: _edit(path, lambda m: _node(
            m, "conv_pw_3_relu/clip_by_value/Minimum")["input"].__setitem__(
                1, "conv_pw_3_relu/Const_1")),
        "valid_padding": lambda path: _edit(path, lambda m: _node(
            m, "conv_dw_2/depthwise")["attr"]["padding"].update(s="VkFMSUQ=")),
        "string_weight": lambda path: _edit(path, lambda m: m["weightsManifest"][0]["weights"][
            0].update(dtype="string", quantization=None)),
    }
    for name, damage in cases.items():
        folder = tmp_path / name / "human_models"
        folder.mkdir(parents=True)
        path = _copy_model(model_json, folder)
        damage(path)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_faceres(tmp_path / name)
    (tmp_path / "other_op" / "human_models" / "faceres.bin").unlink()
    with pytest.raises(FileNotFoundError, match="faceres.bin"):
        load_faceres(tmp_path / "other_op")


def test_uint8_quantised_weights_are_dequantised(tmp_path):
    # TF.js's affine quantisation: code q stands for q * scale + min; float16 and int32 as stored
    codes = np.array([0, 1, 255, 128], np.uint8)
    halves = np.array([0.5, -2.25], np.float16)
    ints = np.array([7, -3], np.int32)
    (tmp_path / "w.bin").write_bytes(codes.tobytes() + halves.tobytes() + ints.tobytes())
    weights = [
        {"name": "q", "shape": [2, 2], "dtype": "float32",
         "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0}},
        {"name": "h", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "i", "shape": [2], "dtype": "int32"},
    ]
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"modelTopology": {"node": []},
                                "weightsManifest": [{"paths": ["w.bin"], "weights": weights}]}))
    read = read_tfjs_weights(path)
    np.testing.assert_array_equal(read["q"], [[-1.0, -0.5], [126.5, 63.0]])
    np.testing.assert_array_equal(read["h"], [0.5, -2.25])
    np.testing.assert_array_equal(read["i"], [7, -3])
    assert read["q"].dtype == np.float32 and read["i"].dtype == np.int32
    for name, array in load_constants(path).items():
        np.testing.assert_array_equal(array, read[name])
