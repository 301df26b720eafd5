"""Per-row preprocessing with completion records, on real sample files (no Prefect, no Ray)."""

from __future__ import annotations

import shutil
from collections import deque
from pathlib import Path

import pytest
from PIL import Image

from heser.config import Config, ConfigError
from heser.preprocess.resumable import (
    RowBatch,
    RowsFailed,
    after_failure,
    failed_outcome,
    fetch_weights,
    flow_config,
    longest_first,
    plan,
    process_batch,
    process_video,
    summary_markdown,
    take_batch,
)
from tests.conftest import make_config, sample_path, write_manifest

VIDEO = ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair")
IMAGE = ("images/st_woman_B_happy1.png", "woman_B")


def _config(tmp: Path, **overrides: object) -> Config:
    return flow_config(make_config(tmp, **{"flow.root": str(tmp / "flow"),
                                           "crop.video.max_frames": 3, **overrides}))


@pytest.fixture(scope="module")
def flow_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    cfg = _config(tmp_path_factory.mktemp("resumable"))
    fetch_weights(cfg)
    return cfg


def test_flow_config_moves_every_output_under_the_flow_root(flow_cfg: Config):
    root = flow_cfg.path(flow_cfg.flow.root)
    for name, path in flow_cfg.paths:
        assert flow_cfg.path(path) == root / name


def test_plan_rejects_rows_that_collide_on_their_output_key(tmp_path: Path):
    manifest = write_manifest(tmp_path / "m.csv", [IMAGE], extra=[
        ["images/st_woman_B_happy1.jpg", "woman_B", "image", "http://127.0.0.1:9/x", "", "", ""],
        ["weights/model.tflite", "", "weights", "http://127.0.0.1:9/y", "", "", ""],
    ])
    jobs, rejects = plan(_config(tmp_path), manifest)
    assert [job.key for job in jobs] == ["woman_B__st_woman_B_happy1"]
    (reject,) = rejects
    assert reject.file == "images/st_woman_B_happy1.jpg"
    assert "already used by images/st_woman_B_happy1.png" in reject.reason


def test_second_run_skips_and_a_parameter_change_redoes(flow_cfg: Config, tmp_path: Path):
    (job,) = plan(flow_cfg, write_manifest(tmp_path / "m.csv", [VIDEO]))[0]
    first = process_video(job, flow_cfg)
    assert first.status == "done" and first.samples == 3
    again = process_video(job, flow_cfg)
    assert again.status == "skipped"
    assert (again.samples, again.rejects, again.sha256) == (first.samples, first.rejects,
                                                            first.sha256)
    smaller = flow_cfg.model_copy(update={"crop": flow_cfg.crop.model_copy(update={"size": 128})})
    assert process_video(job, smaller).status == "done"
    assert process_video(job, smaller).status == "skipped"
    (smaller.path(smaller.paths.parse) / f"{job.key}.tar").unlink()  # an output went missing
    assert process_video(job, smaller).status == "done"


def test_row_without_checksum_is_redone_when_its_bytes_change(flow_cfg: Config, tmp_path: Path):
    (job,) = plan(flow_cfg, write_manifest(tmp_path / "m.csv", [IMAGE], with_sha=False))[0]
    first = process_video(job, flow_cfg)
    assert first.status == "done" and len(first.sha256) == 64
    assert process_video(job, flow_cfg).status == "skipped"
    raw_copy = flow_cfg.path(flow_cfg.paths.raw) / IMAGE[0]
    shutil.copyfile(sample_path("images/st_woman_C_people_0.png"), raw_copy)
    changed = process_video(job, flow_cfg)
    assert changed.status == "done" and changed.sha256 != first.sha256


def test_input_without_a_face_is_a_finished_rejected_row(flow_cfg: Config, tmp_path: Path):
    mirror = tmp_path / "mirror" / "images"
    mirror.mkdir(parents=True)
    Image.new("RGB", (300, 300), (90, 120, 150)).save(mirror / "blank.png")
    cfg = flow_cfg.model_copy(update={"assets": flow_cfg.assets.model_copy(
        update={"mirrors": [tmp_path / "mirror", *flow_cfg.assets.mirrors]})})
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,identity,kind,url,sha256,bytes,license\n"
                        "images/blank.png,nobody,image,http://127.0.0.1:9/b,,,\n")
    (job,) = plan(cfg, manifest)[0]
    outcome = process_video(job, cfg)
    assert outcome.status == "rejected" and outcome.samples == 0
    assert [r.reason for r in outcome.rejects] == ["no face found", "no frame kept"]
    assert process_video(job, cfg).status == "skipped"  # a finished row, not retried


def test_summary_lists_counts_splits_and_rejected_rows(flow_cfg: Config, tmp_path: Path):
    (job,) = plan(flow_cfg, write_manifest(tmp_path / "m.csv", [IMAGE]))[0]
    process_video(job, flow_cfg)
    outcomes = [process_video(job, flow_cfg),  # up to date by now: skipped
                failed_outcome(job, "failed after 3 attempts: a|b")]
    metrics = {"samples": {"train": 1, "val": 0, "test": 0},
               "identities": {"train": 1, "val": 0, "test": 0}}
    text = summary_markdown(outcomes, metrics)
    assert "| 2 | 0 | 1 | 1 |" in text  # rows, done, skipped, rejected
    assert "| train | 1 | 1 |" in text
    assert "| images/st_woman_B_happy1.png | failed after 3 attempts: a/b |" in text


def test_rows_go_longest_first_in_batches_that_shrink_to_single_rows(flow_cfg: Config,
                                                                     tmp_path: Path):
    """Videos before photos, larger files first; a task takes a share of what is left (at most
    rows_per_task), so the run ends on single short rows."""
    names = ["dt_man_E_crop256.png", "dt_woman_D_crop256.png", "dt_woman_F_crop256.png",
             "st_woman_B_happy1.png", "st_woman_C_people_0.png"]
    rows = [(f"images/{name}", f"person{i}") for i, name in enumerate(names)]
    rows += [("videos/mead_M030_front_sad_level3_001.mp4", "M030"), VIDEO]
    jobs, _ = plan(flow_cfg, write_manifest(tmp_path / "m.csv", rows))
    ordered = longest_first(jobs)
    assert [job.row.file for job in ordered[:2]] == [VIDEO[0], rows[5][0]]
    photo_bytes = [job.row.bytes for job in ordered[2:]]
    assert photo_bytes == sorted(photo_bytes, reverse=True)
    pending = deque(ordered)
    split = [take_batch(pending, 3, workers=1) for _ in range(4)]
    assert [len(batch.jobs) for batch in split] == [3, 2, 1, 1]  # ceil(7/2), capped; 4/2; ...
    assert [job for batch in split for job in batch.jobs] == ordered and not pending
    assert split[0].name == f"{ordered[0].key} +2" and split[3].name == ordered[6].key
    assert len(take_batch(deque(ordered), 1, workers=1).jobs) == 1


def test_a_failing_row_fails_its_batch_after_the_others_finished(flow_cfg: Config,
                                                                 tmp_path: Path):
    """The batch raises (so the task is retried) only after its other rows left their records;
    their outcomes are then recovered from the records, as "done" by this run."""
    bad = ["images/dt_man_E_crop256.png", "man_E", "image", "http://127.0.0.1:9/x", "0" * 64,
           "", ""]
    manifest = write_manifest(tmp_path / "m.csv", [(IMAGE[0], "first")], extra=[bad])
    (good, failing), _ = plan(flow_cfg, manifest)
    batch = RowBatch((failing, good))
    with pytest.raises(RowsFailed, match="dt_man_E_crop256.png: .*sha256"):
        process_batch(batch, flow_cfg, "run-1")
    recovered = after_failure(good, flow_cfg, "run-1", "failed after 2 attempts")
    assert recovered.status == "done" and recovered.samples == 1
    lost = after_failure(failing, flow_cfg, "run-1", "failed after 2 attempts")
    assert lost.status == "rejected" and lost.rejects[0].reason == "failed after 2 attempts"
    assert after_failure(good, flow_cfg, "run-2", "x").status == "rejected"  # not this run's


def test_records_say_which_run_and_how_many_attempts(flow_cfg: Config, tmp_path: Path):
    (job,) = plan(flow_cfg, write_manifest(tmp_path / "m.csv", [(IMAGE[0], "attempts")]))[0]
    attempts = flow_cfg.path(flow_cfg.flow.root) / "attempts" / f"{job.key}.log"
    attempts.parent.mkdir(parents=True, exist_ok=True)
    attempts.write_text("run-1 lost-node 123\nrun-0 old-node 7\n")  # a start that died
    first = process_video(job, flow_cfg, "run-1")
    assert first.status == "done" and first.node == "local"
    assert first.attempts == ["lost-node", "local"]  # this run's starts only
    again = process_video(job, flow_cfg, "run-1")  # re-executed in the same run
    assert again.status == "done" and again.attempts == first.attempts
    assert process_video(job, flow_cfg, "run-2").status == "skipped"


def test_rows_per_task_below_one_is_refused_when_params_load(tmp_path: Path):
    with pytest.raises(ConfigError, match="flow.rows_per_task"):
        make_config(tmp_path, **{"flow.rows_per_task": 0})
