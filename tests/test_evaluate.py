"""The `evaluate` stage: its parts on constructed cases whose answers are known by hand (the
result equal to the target, identical pairs, a known gallery, exact mask composites), then the
whole stage on small real shards with tiny untrained models (every number a real measurement,
the report shows the pictures, MLflow has the run). The metric functions themselves are tested
in test_metrics.py, the baselines in test_baselines.py."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from heser import metrics
from heser.config import Config
from heser.data.kshot import plan_videos
from heser.data.masks import fig4_masks
from heser.evaluate import (
    SWAP_GIVEN,
    Judge,
    PairResult,
    Sample,
    identity_retrieval,
    load_samples,
    paste_into_target,
    pasted_swap,
    plan_clips,
    plan_pairs,
    run_evaluate,
    summarize_group,
)
from heser.face.labels import Region
from heser.imaging import from_uint8
from heser.nets.faceres import load_faceres
from heser.swap import CropSwap, Swapper
from tests.conftest import make_config, preprocess_sample, write_manifest
from tests.test_swap import save_untrained_models
from tests.train.test_blender_task import TINY as TINY_BLENDER
from tests.train.test_gan import TINY as TINY_ALIGNER

VIDEOS = [("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
          ("videos/mead_W009_front_happy_level3_001.mp4", "W009"),
          ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair")]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("evaluate")
    manifest = write_manifest(tmp / "m.csv", VIDEOS)
    # every identity in one split, so the test has same-video and cross-identity pairs
    cfg = make_config(tmp, **{
        **TINY_ALIGNER, **TINY_BLENDER, "assets.data_manifest": str(manifest),
        "crop.size": 128, "crop.video.max_frames": 4, "crop.video.stride": 6,
        "shard.split.val": 0.0, "shard.split.test": 0.0, "evaluate.split": "train",
        "evaluate.episodes_per_video": 1, "evaluate.cross_pairs": 3, "evaluate.report_rows": 2,
        "evaluate.video_clips": 1, "evaluate.video_frames": 3, "swap.device": "cpu"})
    preprocess_sample(cfg)
    save_untrained_models(cfg)
    return cfg


def test_pairs_never_mix_identities_in_sources_and_cross_targets_differ(cfg: Config):
    pairs = plan_pairs(cfg, cfg.path(cfg.paths.shards))
    same = [p for p in pairs if p.same_video]
    cross = [p for p in pairs if not p.same_video]
    assert len(same) == 3 and len(cross) == 3
    for pair in pairs:
        identities = {key.split("__")[0] for key in pair.source_keys}
        assert len(identities) == 1 and len(pair.source_keys) == cfg.aligner.k
        target = pair.target_key.split("__")[0]
        assert (target in identities) == pair.same_video
        assert pair.target_key not in pair.source_keys
    assert plan_pairs(cfg, cfg.path(cfg.paths.shards)) == pairs  # seeded


def test_clips_are_consecutive_frames_of_one_video_with_another_identitys_sources(cfg: Config):
    shards = cfg.path(cfg.paths.shards)
    (clip,) = plan_clips(cfg, shards)
    video = next(v for v in plan_videos(shards, "train") if clip.frame_keys[0] in v.keys)
    start = video.keys.index(clip.frame_keys[0])
    assert clip.frame_keys == video.keys[start:start + 3]
    assert len(clip.source_keys) == cfg.aligner.k
    assert {key.split("__")[0] for key in clip.source_keys} != {video.identity}
    assert plan_clips(cfg, shards) == [clip]  # seeded


# -- parts on constructed cases -----------------------------------------------------------------

SIZE = 32


def _square_labels(top: int, bottom: int) -> np.ndarray:
    labels = np.full((SIZE, SIZE), int(Region.BODY), np.uint8)
    labels[top:bottom, top:bottom] = int(Region.FACE)
    return labels


def test_summary_counts_identical_pairs_and_dlibs_share_instead_of_capping():
    rows = [{"heser/background_psnr": math.inf, "heser/eid_distance": 0.5},
            {"heser/background_psnr": 20.0, "heser/eid_distance": 0.7},
            {"heser/background_psnr": 30.0, "heser/eid_distance": math.nan},
            {"other/background_psnr": 1.0}]
    summary = summarize_group(rows, "heser", threshold=0.6)
    # the fourth row has no heser numbers (no face in the target): dropped, as the nan is
    assert summary == {"background_psnr": 25.0, "background_psnr_identical": 1,
                       "background_psnr_dropped": 1, "eid_distance": 0.6,
                       "eid_distance_dropped": 2, "eid_same_person_share": 0.5}
    # no threshold (an E_id without one): no share
    assert "eid_same_person_share" not in summarize_group(rows, "heser", threshold=None)


def _result(identity: str, sources: list[list[float]], found: list[float] | None) -> PairResult:
    descriptors = {net: np.array(sources) for net in ("eid", "faceres")}
    found_group = {} if found is None else {"heser": {net: np.array([found])
                                                      for net in ("eid", "faceres")}}
    return PairResult({}, {}, identity, descriptors, found_group)


def test_identity_retrieval_uses_every_pairs_sources_as_the_gallery():
    # gallery: a along x (two source frames of different lengths), b along y, c along -x (from
    # a same-video pair, which has no query); queries: the result of a pair whose sources are a,
    # nearest a (right), and one whose sources are b, nearest a (wrong)
    results = [_result("a", [[2.0, 0.0], [5.0, 0.0]], [1.0, 0.1]),
               _result("b", [[0.0, 1.0]], [0.9, 0.2]),
               _result("c", [[-1.0, 0.0]], None)]
    retrieval = identity_retrieval(results)
    assert retrieval == {"heser": {"eid_retrieval_top1": 0.5, "faceres_retrieval_top1": 0.5,
                                   "retrieval_chance": pytest.approx(1 / 3)}}


def test_pasting_into_the_target_is_the_exact_mask_composite():
    rng = np.random.default_rng(0)
    target = Sample("t", "T", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8),
                    _square_labels(8, 20))
    head = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    head_labels = _square_labels(12, 24)
    cfg = make_config(Path("unused"), **{"masks.dilation": 2 / SIZE})
    out = paste_into_target(cfg, head, head_labels, target)
    inside = head_labels == int(Region.FACE)
    masks = fig4_masks(torch.from_numpy(head_labels)[None], torch.from_numpy(target.labels)[None],
                       cfg.masks.dilation)
    keep = masks.background[0, 0].numpy() > 0.5  # outside dil(M^H u M_T^H)
    assert keep.any() and not keep[inside].any()
    np.testing.assert_array_equal(out["paste"][inside], head[inside])
    np.testing.assert_array_equal(out["paste"][keep], target.image[keep])
    np.testing.assert_array_equal(out["poisson"][~inside], out["paste"][~inside])


def test_a_swap_that_reproduces_the_target_is_pasted_back_as_the_target(cfg: Config):
    key = plan_pairs(cfg, cfg.path(cfg.paths.shards))[0].target_key
    (sample,) = load_samples(cfg.path(cfg.paths.shards), "train", {key}).values()
    size = sample.image.shape[0]
    image = from_uint8(sample.image)[None]
    masks = fig4_masks(torch.from_numpy(sample.labels)[None], torch.from_numpy(sample.labels)[None],
                       cfg.masks.dilation)
    swap = CropSwap(animated=image, blended=image, head_reference=image, inpaint_reference=image,
                    masks=masks, animated_labels=sample.labels, animated_parsed=True)
    assert pasted_swap(cfg, swap, sample.image).shape == (size, size, 3)
    np.testing.assert_array_equal(pasted_swap(cfg, swap, sample.image), sample.image)


def test_the_target_measured_against_itself(cfg: Config):
    """The result equal to the target: identity cosine 1 and distance 0 under both networks,
    retrieval 1.0 with the target's identity in a known gallery, LPIPS 0, PSNR counted as an
    identical pair."""
    shards = cfg.path(cfg.paths.shards)
    pair = next(p for p in plan_pairs(cfg, shards) if not p.same_video)
    samples = load_samples(shards, "train", {pair.target_key, *pair.source_keys})
    target, source = samples[pair.target_key], samples[pair.source_keys[0]]
    weights = cfg.path(cfg.paths.weights)
    judge = Judge(Swapper(cfg), load_faceres(weights))
    found = judge.descriptors([target.image])
    row = judge.identity_row("target", found, found)
    assert row == {"target/eid_cosine": pytest.approx(1.0), "target/faceres_cosine":
                   pytest.approx(1.0), "target/eid_distance": pytest.approx(0.0, abs=1e-6)}
    assert judge.threshold == pytest.approx(0.6)  # dlib's, stored as float32
    others = judge.descriptors([source.image])
    results = [PairResult({}, {}, target.identity, found, {"target": found}),
               PairResult({}, {}, source.identity, others, {})]
    assert identity_retrieval(results)["target"] == {
        "eid_retrieval_top1": 1.0, "faceres_retrieval_top1": 1.0, "retrieval_chance": 0.5}
    assert metrics.lpips(target.image, target.image.copy(), weights) == 0.0
    rows = [{"reenact/psnr": metrics.psnr(target.image, target.image.copy())}]
    summary = summarize_group(rows, "reenact", None)
    assert math.isnan(summary["psnr"]) and summary["psnr_identical"] == 1


# -- the whole stage -----------------------------------------------------------------------------

def test_evaluate_writes_metrics_pairs_report_and_an_mlflow_run(cfg: Config, tmp_path: Path,
                                                                monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = run_evaluate(cfg)
    reports = cfg.path(cfg.paths.reports)
    saved = json.loads((reports / "metrics.json").read_text())
    assert saved["pairs"] == {"same_video": 3, "cross_identity": 3}
    # DVC tracks metrics.json: no wall-clock time in it, that goes to an untracked file
    assert "seconds" not in saved
    timings = json.loads((reports / "timings" / "evaluate.json").read_text())
    assert timings["seconds"] > 0 and timings["seconds_per_pair"] > 0
    same = saved["reenactment"]["same_video"]
    for key in ("ssim", "psnr", "psnr_identical", "lpips", "eid_identity_error",
                "faceres_identity_error", "pose_error_deg", "expression_error"):
        assert key in same, key
    assert same["psnr_identical"] == 0 and same["lpips"] > 0  # an untrained net copies nothing
    identity_keys = {"eid_cosine", "faceres_cosine", "eid_distance", "eid_same_person_share",
                     "eid_retrieval_top1", "faceres_retrieval_top1", "retrieval_chance"}
    assert identity_keys <= set(saved["reenactment"]["cross_identity"])
    assert set(saved["swap"]) == set(SWAP_GIVEN) == set(saved["swap_given"])
    for name, group in saved["swap"].items():
        assert identity_keys <= set(group), name
        # the gallery: the sources of the three identities
        assert group["retrieval_chance"] == pytest.approx(1 / 3)
        if name != "target":
            assert {"pose_error_deg", "expression_error", "background_psnr",
                    "background_psnr_identical"} <= set(group), name
    assert set(saved["identity_networks"]) == {"eid", "faceres"}
    video = saved["video"]
    assert (video["clips"], video["frames_per_clip"]) == (1, 3)
    for group in ("heser", "target"):
        assert {"flicker", "identity_spread", "landmark_jitter"} <= set(video[group])
    with open(reports / "evaluate_pairs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"same_video", "cross_identity"}
    assert all(r["heser_faceres_cosine"] for r in rows if r["kind"] == "cross_identity")
    page = (reports / "report.html").read_text()
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == 2 * 3 + 2 * 9
    assert "synthetic" in page and "Table 2" in page and "0.53" in page
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert np.isclose(run.data.metrics["swap/heser/faceres_cosine"],
                      saved["swap"]["heser"]["faceres_cosine"])
    assert "video/heser/flicker" in run.data.metrics
    assert run.data.metrics["timing/seconds"] == timings["seconds"]
