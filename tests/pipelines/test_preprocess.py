"""The `preprocess` Prefect flow against a real Prefect server (Prefect's test harness starts one
on 127.0.0.1 with a temporary database) and a real local Ray, on real sample files.

The flow must produce the same shards as the DVC stages, skip what is up to date, retry a
failing row a bounded number of times and report it, and survive a Ray worker killed mid-task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    TaskRunFilter,
    TaskRunFilterName,
)
from prefect.settings import PREFECT_API_URL

from heser.data.shards import decode_sample, read_index, read_tar
from heser.rejects import read_rejects
from pipelines.preprocess import deployment, preprocess
from tests.conftest import SAMPLE, SHARED, make_config, preprocess_sample, write_manifest

ROWS = [
    ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
    ("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
    ("videos/mead_M030_front_sad_level3_001.mp4", "M030"),
    ("videos/vr1_young_asian_man_suit.mp4", "man_suit"),
    ("images/st_woman_B_happy1.png", "woman_B"),
]
# The right file with a wrong checksum: fails on every attempt.
BAD_ROW = ["images/dt_man_E_crop256.png", "man_E", "image", "http://127.0.0.1:9/x", "0" * 64,
           "", ""]
BAD_KEY = "man_E__dt_man_E_crop256"
RETRIES = 1
COMMON = {"crop.video.max_frames": 4, "crop.video.stride": 6, "assets.retries": 1,
          "assets.mirrors": [str(SAMPLE), str(SHARED / "weights")]}
FLOW = {**COMMON, "flow.retries": RETRIES, "flow.retry_delay_s": 0, "ray.num_cpus": 2,
        "ray.object_store_mb": 128}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("manifest") / "m.csv", ROWS, extra=[BAD_ROW])


@pytest.fixture(scope="module")
def stages_out(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> Path:
    """The DVC stages' shards for the same manifest and parameters."""
    tmp = tmp_path_factory.mktemp("stages")
    cfg = make_config(tmp, **COMMON, **{"assets.data_manifest": str(manifest),
                                        "assets.fail_on_error": False})
    return preprocess_sample(cfg)


@pytest.fixture(scope="module")
def first_run(prefect_server, tmp_path_factory: pytest.TempPathFactory,
              manifest: Path) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("flow")
    result = preprocess(str(manifest), overrides={**FLOW, "flow.root": str(root)})
    return result, root


def _samples(shard_dir: Path) -> dict[str, dict]:
    return {s["key"]: s for tar in sorted(shard_dir.glob("*.tar"))
            for s in map(decode_sample, read_tar(tar))}


def _index(shard_dir: Path) -> list[tuple[str, str]]:
    return sorted((row["key"], row["split"])
                  for row in read_index(shard_dir / "index.parquet").to_pylist())


def test_flow_shards_match_the_dvc_stages(first_run, stages_out: Path):
    result, root = first_run
    assert (result["done"], result["skipped"], result["rejected"]) == (5, 0, 1)
    flow_shards = root / "shards"
    assert _index(flow_shards) == _index(stages_out)
    ours, theirs = _samples(flow_shards), _samples(stages_out)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for key, sample in ours.items():
        reference = theirs[key]
        diff = np.abs(sample["img"].astype(int) - reference["img"].astype(int))
        assert diff.max() <= 1, key  # PNG is lossless: the same crop within rounding
        assert np.mean(sample["parse"] != reference["parse"]) < 1e-3, key
        np.testing.assert_allclose(sample["lmk"], reference["lmk"], atol=0.5)


def test_failing_row_is_retried_then_reported(first_run):
    _, root = first_run
    (reject,) = [r for r in read_rejects(root / "reports" / "rejects.csv")
                 if r.file == BAD_ROW[0]]
    assert reject.reason.startswith(f"failed after {RETRIES + 1} attempts")
    assert "sha256 mismatch" in reject.reason
    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[BAD_KEY])))
    assert run.state.is_failed() and run.run_count == RETRIES + 1


def test_summary_artifact_counts_rows(first_run):
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["preprocess-summary"])))
    assert artifacts and artifacts[0].type == "markdown"
    text = artifacts[0].data
    assert "| 6 | 5 | 0 | 1 |" in text and BAD_ROW[0] in text


def test_rerun_does_only_what_is_missing(first_run, manifest: Path, tmp_path: Path):
    _, root = first_run
    shards_before = {p.name: p.read_bytes() for p in (root / "shards").glob("*.tar")}
    (root / "done" / "M030__mead_M030_front_sad_level3_001.json").unlink()  # lost in a crash
    # As a served deployment runs it: a fresh process loads the deployment's entrypoint (from
    # elsewhere than the checkout), and its Ray workers must unpickle what it sends them.
    script = (f"from prefect.flows import load_flow_from_entrypoint as load\n"
              f"flow = load({deployment().entrypoint!r})\n"
              f"result = flow({str(manifest)!r}, overrides={ {**FLOW, 'flow.root': str(root)}!r})\n"
              f"print('RESULT', result['done'], result['skipped'], result['rejected'])\n")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RESULT 1 4 1" in run.stdout
    assert {p.name: p.read_bytes() for p in (root / "shards").glob("*.tar")} == shards_before


def test_killed_ray_worker_is_retried_and_nothing_is_lost(prefect_server, manifest: Path,
                                                          stages_out: Path, tmp_path: Path):
    killed: list[int] = []
    done = threading.Event()

    def kill_first_busy_worker() -> None:
        while not done.is_set() and not killed:
            for proc in psutil.process_iter(["pid", "cmdline"]):
                title = " ".join(proc.info["cmdline"] or [])
                if title.startswith("ray::preprocess-video"):  # busy; idle ones are ray::IDLE
                    os.kill(proc.info["pid"], signal.SIGKILL)
                    killed.append(proc.info["pid"])
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_first_busy_worker, daemon=True)
    killer.start()
    try:
        result = preprocess(str(manifest), overrides={**FLOW, "flow.root": str(tmp_path)})
    finally:
        done.set()
        killer.join()
    assert killed, "no busy Ray worker was seen to kill"
    assert (result["done"], result["rejected"]) == (5, 1)
    assert _index(tmp_path / "shards") == _index(stages_out)


def test_deployment_is_preprocess_slash_preprocess(prefect_server):
    deployment().apply()
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name("preprocess/preprocess")
    assert set(found.parameter_openapi_schema["properties"]) == {"manifest", "params",
                                                                  "overrides"}
