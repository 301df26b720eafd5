"""heser.train.learnability and the aligner's cross-identity training: the subset index, the
figures on constructed inputs (sensitivities, retrieval with its chance level and the driver
share, mouth opening), cross pairs within a batch, the frozen encoders of the motion term, and
one training step with the cross terms on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from heser.data.shards import INDEX_NAME, read_index, write_index
from heser.evaluate import Sample
from heser.face.motion import motion_features
from heser.imaging import from_uint8
from heser.train.aligner import AlignerTask, cross_pairs, frozen
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer, episode_generators
from heser.train.learnability import (
    HELD_OUT,
    TRAIN,
    Person,
    _following,
    _retrieval,
    code_spread,
    landmark_person_top1,
    mouth_following,
    mouth_opening,
    mouth_pair,
    resolution_floor,
    sensitivities,
    source_average_l1,
    subset_shards,
)
from tests.conftest import read_rgb
from tests.face.test_motion import frontal_face
from tests.train.test_gan import FACES, _batches, _tiny


def _row(identity: str, video: str, frame: int, split: str = "train") -> dict:
    return {"key": f"{identity}__{video}__{frame:06d}", "identity": identity, "video": video,
            "frame": frame, "split": split, "shard": "train-000000.tar", "source_file": "x.mp4",
            "kind": "video", "n_faces": 1, "inside_fraction": 1.0}


def test_subset_holds_out_each_videos_last_frames(tmp_path: Path):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "train-000000.tar").write_bytes(b"")
    rows = ([_row("a", "v1", f) for f in range(8)] + [_row("a", "photo", 0)]
            + [_row("b", "v2", f) for f in (5, 1, 3, 2)] + [_row("c", "v3", f) for f in range(6)]
            + [_row("d", "v4", f, "val") for f in range(6)])
    write_index(rows, shards / INDEX_NAME)
    counts = subset_shards(shards, ("a", "b"), 0.25, tmp_path / "subset")
    index = read_index(tmp_path / "subset" / INDEX_NAME).to_pylist()
    held = {(r["identity"], r["frame"]) for r in index if r["split"] == HELD_OUT}
    assert held == {("a", 6), ("a", 7), ("b", 5)}  # the last quarter, at least one, by frame
    assert counts == {TRAIN: 10, HELD_OUT: 3}  # a photo is never held out; c and d are not in
    assert (tmp_path / "subset" / "train-000000.tar").is_symlink()
    with pytest.raises(ValueError, match=r"\['d'\]"):
        subset_shards(shards, ("a", "d"), 0.25, tmp_path / "other")  # d has no train frames


def test_sensitivities_separate_source_and_driver_changes():
    # I_A[p, d] = p: it depends on the sources alone
    animated = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 4, 3, 2, 2)
    found = sensitivities(animated)
    assert found["change_sources_only"] == pytest.approx((1 + 2 + 1) / 3)
    assert found["change_driver_only"] == 0


def _people(*names: str) -> list[Person]:
    return [Person(name, [], [], []) for name in names]


def test_retrieval_counts_cross_pairs_own_identity_and_driver_share():
    people = _people("a", "b")
    galleries = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    same = np.array([[True, False], [False, True]])  # one driver per person
    # row a: own driver -> a, b's driver -> b (leak); row b: a's driver -> b, own -> b
    found = np.array([[[1.0, 0.1], [0.1, 1.0]], [[0.2, 1.0], [0.0, 1.0]]])
    result = _retrieval(found, people, galleries, same)
    assert result == {"cross_top1": 0.5, "same_top1": 1.0, "cross_driver_share": 0.5,
                      "chance": 0.5}


def _frame(value: int) -> Sample:
    return Sample("k", "a", np.full((8, 8, 3), value, np.uint8), np.zeros((8, 8), np.uint8))


def test_source_average_baseline_scores_the_sources_mean_frame_against_each_driver():
    # sources 0 and 255 average to mid-gray (0 in [-1, 1]); drivers black (-1) and white (+1)
    person = Person("a", [_frame(0), _frame(255)], [_frame(0), _frame(255)], [])
    assert source_average_l1([person], 4) == pytest.approx(1.0, abs=1e-3)
    assert source_average_l1([Person("b", [_frame(255)], [_frame(255)], [])], 4) == 0


def _posed(yaw_deg: float) -> Sample:
    """A frame whose landmarks are the synthetic face of tests/face/test_motion.py turned."""
    turn = Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix()
    marks = (frontal_face() - [128, 128, 0]) @ turn.T + [128, 128, 0]
    return Sample("k", "a", np.zeros((256, 256, 3), np.uint8), np.zeros((1, 1), np.uint8),
                  marks.astype(np.float32))


def test_landmark_person_top1_says_whether_the_pose_alone_names_the_person():
    # a always faces left, b right: the pose names the person
    apart = [Person("a", [], [_posed(-21), _posed(-19)], [_posed(-20), _posed(-22)]),
             Person("b", [], [_posed(19), _posed(21)], [_posed(20), _posed(22)])]
    assert landmark_person_top1(apart) == {"landmark_person_top1": 1.0,
                                           "landmark_person_chance": 0.5}
    # the held-out drivers turned the other way from their own training frames
    mixed = [Person("a", [], [_posed(19), _posed(21)], [_posed(-20), _posed(-22)]),
             Person("b", [], [_posed(-19), _posed(-21)], [_posed(20), _posed(22)])]
    assert landmark_person_top1(mixed)["landmark_person_top1"] == 0.0
    no_marks = [Person("a", [], [_frame(0)], [_frame(0)]), Person("b", [], [_frame(0)],
                                                                  [_frame(0)])]
    assert np.isnan(landmark_person_top1(no_marks)["landmark_person_top1"])


def test_code_spread_sees_codes_that_cannot_reach_the_renderer(tmp_path: Path):
    faces = [Sample(name, name, np.asarray(Image.fromarray(read_rgb(name)).resize((64, 64))),
                   np.zeros((1, 1), np.uint8)) for name in FACES]
    people = [Person("a", faces[:2], faces[2:], []), Person("b", faces[2:], faces[:2], [])]
    torch.manual_seed(0)
    # plain MLP layers, so the last one's weights can be silenced below
    task = AlignerTask(_tiny(tmp_path, **{"aligner.mlp_spectral_norm": False}),
                       torch.device("cpu"))
    found = code_spread(task, people)
    assert found["portrait_code_spread"] > 0 and found["adain_spread_over_drivers"] > 0
    assert found["pose_code_spread_own_drivers"] > 0
    assert found["expression_code_spread_own_drivers"] > 0
    last = task.generator.mlp.net[-1]
    with torch.no_grad():  # an MLP that passes nothing on: no AdaIN parameter moves
        last.weight.zero_(), last.bias.zero_()
    silenced = code_spread(task, people)
    assert silenced["adain_spread_over_drivers"] == 0 and silenced["adain_size"] == 0
    for unchanged in ("portrait_code_spread", "pose_code_spread_own_drivers"):
        assert silenced[unchanged] == found[unchanged]


def test_mouth_opening_is_the_lip_gap_over_the_eye_corner_distance():
    landmarks = np.zeros((468, 3))
    landmarks[33, :2], landmarks[263, :2] = (0, 0), (10, 0)
    landmarks[13, :2], landmarks[14, :2] = (5, 20), (5, 23)
    assert mouth_opening(landmarks, "mediapipe468") == pytest.approx(0.3)
    assert np.isnan(mouth_opening(np.zeros((68, 3)), "ibug68"))


def _mouth(key: str, gap: float | None) -> Sample:
    """A frame of the synthetic face with its inner lips ``gap`` pixels apart (None: no
    landmarks)."""
    marks = frontal_face()
    if gap is not None:
        marks[14, 1] = marks[13, 1] + gap
    return Sample(key, "a", np.zeros((256, 256, 3), np.uint8), np.zeros((1, 1), np.uint8),
                  None if gap is None else marks.astype(np.float32))


def test_mouth_pair_is_the_most_closed_and_the_most_open_frame():
    frames = [_mouth("half", 5), _mouth("closed", 1), _mouth("none", None), _mouth("open", 9)]
    closed, opened = mouth_pair(frames)
    assert (closed.key, opened.key) == ("closed", "open")
    assert mouth_pair([_mouth("one", 4), _mouth("none", None)]) is None
    assert mouth_pair([_mouth("same", 4), _mouth("again", 4)]) is None  # nothing opens wider


def test_mouth_following_without_a_mouth_pair_is_nan_and_draws_nothing(tmp_path: Path):
    task = AlignerTask(_tiny(tmp_path), torch.device("cpu"))
    figures, picture = mouth_following(task, [Person("a", [], [], [])], landmarks=None)
    assert picture is None and all(np.isnan(v) for v in figures.values())


def test_resolution_floor_compares_each_driver_with_its_own_round_trip():
    detail = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    seen = []

    def found(image: np.ndarray):  # the detector: the synthetic face, opened as the image blurs
        seen.append(image.shape)
        marks = frontal_face()
        marks[14, 1] += 10 * (image.std() < detail.std())
        return marks, "mediapipe468"

    person = Person("a", [], [Sample("k", "a", detail, np.zeros((1, 1), np.uint8))], [])
    floor = resolution_floor([person], 16, found)
    assert seen == [(256, 256, 3)] * 2  # the driver, then its round trip, both at crop size
    assert floor["pose_error_floor_deg"] == pytest.approx(0, abs=1e-3)
    assert floor["expression_error_floor"] > 0  # 16 px lost the detail: the mouth "moved"
    assert np.isnan(resolution_floor([person], 16, lambda image: None)["pose_error_floor_deg"])


def test_following_compares_drivers_and_i_a_over_the_same_pairs(tmp_path: Path):
    task = AlignerTask(_tiny(tmp_path), torch.device("cpu"))
    face = _frame(0)
    person = Person("a", [face, face], [], [])
    picture = from_uint8(face.image)[None]
    # the detector finds the drivers and "measures" them by their key; I_A it finds only for b
    found = iter([(1.0,), (3.0,), (1.0,), None,      # pair a: drivers 2 apart, one I_A missed
                  (0.0,), (10.0,), (0.0,), (5.0,)])  # pair b: drivers 10 apart, I_A 5
    pairs = [(person, [(picture, None, "a0"), (picture, None, "a1")]),
             (person, [(picture, None, "b0"), (picture, None, "b1")])]
    given, followed, ratio, grid = _following(task, pairs, lambda image: next(found),
                                              lambda x, y: y[0] - x[0])
    assert given == 6.0  # what the drivers give: both pairs
    assert (followed, ratio) == (5.0, 0.5)  # pair a, with a missed I_A, left out of the ratio
    assert grid is not None


def test_cross_pairs_pick_another_person_and_skip_the_lonely():
    sources, drivers = cross_pairs(["a", "a", "b", "c"], step=0)
    assert sources == [0, 1, 2, 3]
    assert all(["a", "a", "b", "c"][s] != ["a", "a", "b", "c"][d]
               for s, d in zip(sources, drivers))
    assert cross_pairs(["a", "a"], step=0) == ([], [])
    assert cross_pairs(["a", "b", "c"], 0)[1] != cross_pairs(["a", "b", "c"], 1)[1]  # rotates


def test_frozen_keeps_gradients_from_the_networks_inside_the_block():
    net = torch.nn.Linear(2, 1)
    image = torch.ones(1, 2, requires_grad=True)
    with frozen(net):
        net(image).sum().backward()
    assert net.weight.grad is None and image.grad is not None
    assert net.weight.requires_grad  # restored


def test_a_training_step_with_cross_terms_trains_on_cross_pairs(tmp_path: Path):
    cfg = _tiny(tmp_path, **{"aligner.loss.cross_identity": 1.0,
                             "aligner.loss.cross_motion": 1.0,
                             "aligner.augment.grayscale": 0.5, "aligner.augment.blur": 0.02})
    torch.manual_seed(0)
    task = AlignerTask(cfg, torch.device("cpu"))
    trainer = GanTrainer(task, cfg.aligner.train, DistInfo(0, 1, torch.device("cpu")))
    batch = {**_batches(1)[0], "identity": ["a", "b", "a", "c"]}
    result = trainer.train_step(batch)
    assert {"cross_identity", "cross_motion", "cross_adversarial"} <= set(result.losses)
    assert result.fake["image"].shape[0] == 8  # 4 episodes, then 4 cross pairs, one call
    assert result.losses["total"] == pytest.approx(
        sum(cfg.aligner.loss.model_dump()[k] * result.losses[k] for k in
            ("l1", "perceptual", "feature_matching", "identity", "adversarial"))
        + result.losses["cross_identity"] + result.losses["cross_motion"]
        + cfg.aligner.loss.adversarial * result.losses["cross_adversarial"], rel=1e-4)
    # off by default (the paper's recipe): no cross pairs, and nothing extra in the step
    plain = AlignerTask(_tiny(tmp_path / "plain"), torch.device("cpu"))
    assert "cross_drivers" not in plain.prepare(batch, 0)


def _landmark_task(tmp_path: Path) -> AlignerTask:
    torch.manual_seed(0)
    return AlignerTask(_tiny(tmp_path, **{"aligner.motion_input": "landmarks",
                                          "aligner.augment.warp_target": True,
                                          "aligner.augment.rotation_deg": 30,
                                          "aligner.augment.shift": 0.1}), torch.device("cpu"))


def test_warp_target_moves_the_target_and_its_landmarks_alike(tmp_path: Path):
    task = _landmark_task(tmp_path)
    target = torch.full((2, 3, 64, 64), -1.0)
    target[:, :, 20, 40] = 1.0  # a white dot at landmark 0: x 40, y 20
    marks = torch.zeros(2, 468, 3)
    marks[:, 0] = torch.tensor([40.0, 20.0, 0.0])
    warped, moved = task.warp_target(target, marks, episode_generators(0, 1, ["a", "b"]))
    assert not torch.equal(warped, target) and not torch.equal(moved[0], moved[1])
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    for picture, points in zip(warped, moved):
        weight = (picture[0] + 1) / 2
        found = [float((weight * axis).sum() / weight.sum()) for axis in (cols, rows)]
        assert found == pytest.approx(points[0, :2].tolist(), abs=0.5)


def test_the_landmark_driver_is_the_warped_target_in_training_and_as_is_otherwise(
        tmp_path: Path):
    task = _landmark_task(tmp_path)
    batch = _batches(1)[0]
    marks = torch.from_numpy(frontal_face()[None] / 4).float().expand(4, -1, -1)  # 256 -> 64 px
    batch["target_landmarks"] = marks
    plain = task.prepare(batch, 1, augment=False)["driver"]["landmark_motion"]
    as_is = torch.from_numpy(np.stack([motion_features(m, 64) for m in marks.numpy()]))
    torch.testing.assert_close(plain, as_is)
    trained = task.prepare(batch, 1)
    assert not torch.allclose(trained["driver"]["landmark_motion"], as_is, atol=1e-3)
    assert not torch.allclose(trained["target"], task.prepare(batch, 1, augment=False)["target"])


def test_unusable_target_landmarks_name_their_frame(tmp_path: Path):
    task = _landmark_task(tmp_path)
    batch = _batches(1)[0]
    marks = torch.from_numpy(frontal_face()[None] / 4).float().repeat(4, 1, 1)
    marks[2] = float("nan")
    batch["target_landmarks"] = marks
    with pytest.raises(ValueError, match=batch["target_key"][2] + ": landmarks contain NaN"):
        task.prepare(batch, 1, augment=False)
