"""The `preprocess` flow and a Ray Tune sweep on a real two-node Ray cluster (heser.cluster's
LocalCluster: a head and a second node, separate raylets on this machine), against a real Prefect
server: both nodes take work, the shards equal the DVC stages' byte for byte, and losing the
second node mid-run (its raylet killed) costs nothing but the retried rows.

The tests run in this order: the flow's node-loss test kills the second node, and the sweep's
adds a third node and kills that one.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow.tracking import MlflowClient
from ray import tune

from heser.cluster import LocalCluster
from heser.data.shards import read_index
from pipelines.preprocess import preprocess
from pipelines.tune import main as tune_main
from tests.conftest import SAMPLE, SHARED, make_config, preprocess_sample, write_manifest
from tests.train.test_blender_task import TINY as TINY_BLENDER

pytestmark = pytest.mark.slow

ROWS = [
    ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
    ("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
    ("videos/mead_M030_front_sad_level3_001.mp4", "M030"),
    ("videos/vr1_young_asian_man_suit.mp4", "man_suit"),
    ("videos/mead_W009_front_happy_level3_001.mp4", "W009"),
    ("images/st_woman_B_happy1.png", "woman_B"),
]
COMMON = {"crop.video.max_frames": 4, "crop.video.stride": 6, "assets.retries": 1,
          "assets.mirrors": [str(SAMPLE), str(SHARED / "weights")]}
FLOW = {**COMMON, "flow.retries": 1, "flow.retry_delay_s": 0}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(size=2, num_cpus=1, object_store_mb=100) as two_nodes:
        yield two_nodes


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("manifest") / "m.csv", ROWS)


@pytest.fixture(scope="module")
def stages_out(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> Path:
    """The DVC stages' shards for the same manifest and parameters."""
    cfg = make_config(tmp_path_factory.mktemp("stages"), **COMMON,
                      **{"assets.data_manifest": str(manifest)})
    return preprocess_sample(cfg)


def _records(root: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (root / "done").glob("*.json")}


def _shard_bytes(shard_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(shard_dir.glob("*.tar"))}


def _index_keys(shard_dir: Path) -> list[str]:
    return [row["key"] for row in read_index(shard_dir / "index.parquet").to_pylist()]


def _run_flow(cluster: LocalCluster, manifest: Path, root: Path) -> dict:
    return preprocess(str(manifest), overrides={**FLOW, "flow.root": str(root),
                                                "ray.address": cluster.address})


def test_flow_runs_on_both_nodes_and_matches_the_dvc_stages(cluster: LocalCluster,
                                                            prefect_server, manifest: Path,
                                                            stages_out: Path, tmp_path: Path):
    result = _run_flow(cluster, manifest, tmp_path)
    assert (result["done"], result["skipped"], result["rejected"]) == (len(ROWS), 0, 0)
    nodes = {record["node"] for record in _records(tmp_path).values()}
    assert nodes == {cluster.node_id(0), cluster.node_id(1)}
    assert _shard_bytes(tmp_path / "shards") == _shard_bytes(stages_out)
    assert _index_keys(tmp_path / "shards") == _index_keys(stages_out)


def _sweep_args(cluster: LocalCluster, stages_out: Path, tmp_path: Path,
                **changes: object) -> list[str]:
    overrides = {**TINY_BLENDER, "paths.shards": str(stages_out),
                 "paths.weights": str(stages_out.parent / "weights"),  # fetched by the stages
                 "paths.reports": str(tmp_path / "reports"),
                 "tune.storage": str(tmp_path / "sweeps"), "ray.address": cluster.address,
                 "tune.max_concurrent": 2, "tune.scheduler.name": "fifo",
                 "tune.blender.num_samples": 2, "tune.blender.steps": 2,
                 "tune.blender.report_every": 1,
                 "tune.blender.overrides": {"blender.train.eval_episodes": 2,
                                            "blender.train.workers": 0}, **changes}
    return [arg for key, value in overrides.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A test's own MLflow store. A sweep's MLflow callback sets MLflow's process-wide tracking
    URI, which outranks MLFLOW_TRACKING_URI, so it is put back afterwards: otherwise the next
    module's sweeps would log into this test's store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield
    mlflow.set_tracking_uri(None)


def test_sweep_runs_its_trials_on_both_nodes(cluster: LocalCluster, stages_out: Path,
                                             tmp_path: Path, mlflow_store: None):
    args = _sweep_args(cluster, stages_out, tmp_path)
    result = tune_main(["run", "--model", "blender", "--name", "cluster", *args])
    assert result["trials"] == 2
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("heser-tune-blender").experiment_id])
    trials = [run for run in runs if "heser.trial_id" in run.data.tags]
    assert {run.data.tags["heser.end"] for run in trials} == {"completed"}
    # One CPU per trial and per node: two trials at once must use both nodes.
    states = sorted((tmp_path / "sweeps" / "cluster").glob("*/result.json"))
    ips = {json.loads(path.read_text().splitlines()[-1])["node_ip"] for path in states}
    assert len(ips) == 2 and "127.0.0.2" in ips


def test_losing_a_node_mid_run_retries_its_rows_on_the_head(cluster: LocalCluster,
                                                            prefect_server, manifest: Path,
                                                            stages_out: Path, tmp_path: Path):
    """SIGKILL the second node's raylet while it processes a row (it has logged its attempt,
    and the row has no completion record yet); the flow must finish on the head with every row
    exactly once, and the rows the node had started show two attempts."""
    lost = cluster.node_id(1)
    raylet = cluster.raylet(1)
    killed = threading.Event()
    finished = threading.Event()

    def kill_when_busy() -> None:
        while not finished.is_set():
            started = {log.stem for log in (tmp_path / "attempts").glob("*.log")
                       if lost in log.read_text()}
            if started - {path.stem for path in (tmp_path / "done").glob("*.json")}:
                raylet.kill()
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    try:
        result = _run_flow(cluster, manifest, tmp_path)
    finally:
        finished.set()
        killer.join()
    assert killed.is_set(), "the second node never ran a row"
    assert not psutil.pid_exists(raylet.pid) or raylet.status() == psutil.STATUS_ZOMBIE
    assert (result["done"], result["rejected"]) == (len(ROWS), 0)
    keys = _index_keys(tmp_path / "shards")
    assert len(keys) == len(set(keys)) and keys == _index_keys(stages_out)
    assert _shard_bytes(tmp_path / "shards") == _shard_bytes(stages_out)
    records = _records(tmp_path)
    retried = [r for r in records.values() if len(r["attempts"]) > 1]
    assert retried, {key: r["attempts"] for key, r in records.items()}
    for record in retried:  # started on the lost node, finished elsewhere
        assert record["attempts"][0] == lost and record["node"] != lost


def test_a_trial_lost_with_its_node_resumes_from_its_checkpoint(
        cluster: LocalCluster, stages_out: Path, tmp_path: Path, mlflow_store: None):
    """Once both trials have reported once, the raylet of a node (not the head) that runs one
    of them is killed: that trial is retried elsewhere (tune.max_failures) from its checkpoint,
    not from step 0. A fresh node is added first (after the flow's node-loss test, the second
    node is gone)."""
    cluster.add_node()
    sweep_dir = tmp_path / "sweeps" / "lost"
    finished, killed = threading.Event(), threading.Event()

    def runs_a_trial(raylet: psutil.Process | None) -> bool:
        try:
            return raylet is not None and any(" ".join(c.cmdline()).startswith(
                "ray::ImplicitFunc") for c in raylet.children())
        except psutil.NoSuchProcess:  # a worker that just exited
            return False

    def trial_raylet() -> psutil.Process | None:
        raylets = [cluster.raylet(i) for i in range(1, len(cluster.nodes))]
        return next((r for r in raylets if runs_a_trial(r)), None)

    def kill_after_first_reports() -> None:
        while not finished.is_set():
            raylet = trial_raylet()
            # result.json: the driver has taken the report in, its checkpoint included
            reported = [r for r in sweep_dir.glob("*/result.json") if r.read_text().strip()]
            if raylet and len(reported) == 2:
                raylet.kill()
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_reports, daemon=True)
    killer.start()
    try:
        result = tune_main(["run", "--model", "blender", "--name", "lost", *_sweep_args(
            cluster, stages_out, tmp_path, **{"tune.blender.steps": 3,
                                              "tune.max_failures": 1})])
    finally:
        finished.set()
        killer.join()
    assert killed.is_set() and result["trials"] == 2
    trials = tune.ExperimentAnalysis(str(sweep_dir)).trials
    assert all(trial.last_result["training_iteration"] == 3 for trial in trials)
    resumed = [trial for trial in trials if trial.last_result["iterations_since_restore"] < 3]
    assert len(resumed) == 1  # the lost node's trial, continued from its checkpoint
