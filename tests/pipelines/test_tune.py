"""Ray Tune sweeps (pipelines/tune.py) on real local Ray, a local MLflow store and shards of real
sample videos, with tiny networks: every trial a finished nested run with its parameters and
metrics, the best-config file the best trial, a finished sweep restored without new runs, and a
sweep interrupted by Ctrl+C continued by `restore` from its trials' checkpoints."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.search.sample import Categorical, Float

from heser.config import ConfigError
from heser.tracking import EXPERIMENT_KIND
from heser.train import sweep
from pipelines.tune import main
from tests.conftest import ROOT, make_config, preprocess_sample, write_manifest
from tests.train.test_blender_task import TINY as TINY_BLENDER
from tests.train.test_gan import TINY as TINY_ALIGNER
from tests.train.test_stage import VIDEOS

TRIALS = {"ray.num_cpus": 2, "ray.object_store_mb": 128, "tune.max_concurrent": 2,
          "tune.blender.num_samples": 3, "tune.blender.steps": 4, "tune.blender.report_every": 2,
          "tune.blender.overrides": {"blender.train.eval_episodes": 2,
                                     "blender.train.workers": 0, "blender.train.log_every": 1}}
BLENDER_KEYS = ["blender.tau", "blender.loss.l1", "blender.loss.perceptual",
                "blender.loss.cycle", "blender.loss.adversarial"]


def _args(overrides: dict[str, object]) -> list[str]:
    return [arg for key, value in overrides.items()
            for arg in ("--set", f"{key}={json.dumps(value)}")]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Overrides that point a sweep at small real shards and keep its outputs in a tmp dir."""
    tmp = tmp_path_factory.mktemp("tune")
    manifest = write_manifest(tmp / "m.csv", VIDEOS)
    cfg = make_config(tmp, **{"assets.data_manifest": str(manifest),
                              "crop.video.max_frames": 4, "crop.video.stride": 6})
    preprocess_sample(cfg)
    return {"paths.shards": str(cfg.path(cfg.paths.shards)),
            "paths.weights": str(cfg.path(cfg.paths.weights)),  # LPIPS of the held-out metrics
            "paths.reports": str(tmp / "reports"), "tune.storage": str(tmp / "sweeps"),
            **TINY_BLENDER, **TINY_ALIGNER, **TRIALS}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A local MLflow store of this module's own (the driver sets it as MLflow's global URI,
    which is put back afterwards)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        yield MlflowClient(uri)
        mlflow.set_tracking_uri(None)


def _runs(client: MlflowClient, model: str = "blender") -> list:
    experiment = client.get_experiment_by_name(sweep.experiment_name(model))
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _sweep_runs(client: MlflowClient, name: str) -> tuple:
    runs = _runs(client)
    parent = next(run for run in runs if run.info.run_name.startswith(f"sweep {name} "))
    children = [run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def _table(data: dict, model: str = "blender") -> list[dict[str, str]]:
    with open(Path(data["paths.reports"]) / f"tune_{model}.csv") as fh:
        return list(csv.DictReader(fh))


# -- the sweep and its MLflow runs -----------------------------------------------------------

@pytest.fixture(scope="module")
def asha_sweep(data: dict, store: MlflowClient) -> dict:
    return main(["run", "--model", "blender", "--name", "asha", *_args(data)])


def test_every_trial_is_a_finished_nested_run_with_params_metrics_and_grid(
        asha_sweep: dict, store: MlflowClient):
    parent, children = _sweep_runs(store, "asha")
    assert parent.info.status == "FINISHED" and len(children) == 3
    experiment = store.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]  # the training-runs table
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"trial {run.data.tags['heser.trial_id']}"
        assert run.data.tags["heser.end"] in ("completed", "stopped")  # ASHA may stop some
        assert set(BLENDER_KEYS) <= set(run.data.params)
        assert run.data.params["blender.size"] == "64"  # the whole model section
        assert run.data.params["blender.train.steps"] == "4"  # the sweep's budget
        history = store.get_metric_history(run.info.run_id, sweep.OBJECTIVE)
        assert [m.step for m in history] == [2, 4][:len(history)] and history
        assert "val/blender/head_psnr" in run.data.metrics
        assert "train/l1" in run.data.metrics
        assert [a.path for a in store.list_artifacts(run.info.run_id, "samples")] == [
            "samples/samples.png"]
    assert ray.is_initialized() is False  # the sweep shut its own Ray down


def test_tune_keeps_one_checkpoint_per_trial_and_the_working_copies_go(asha_sweep: dict,
                                                                       data: dict):
    experiment = Path(data["tune.storage"]) / "asha"
    assert len(list(experiment.glob("*/checkpoint_*/blender.pt"))) == 3
    assert list(experiment.glob(f"{sweep.SCRATCH}/*/samples.png"))
    assert not list(experiment.rglob(f"{sweep.SCRATCH}/*/*.pt"))


def test_best_config_is_the_best_trial_in_the_table_and_in_mlflow(asha_sweep: dict, data: dict,
                                                                   store: MlflowClient):
    best = json.loads((Path(data["paths.reports"]) / "tune_blender.json").read_text())
    assert best == asha_sweep["best"]
    rows = _table(data)
    assert len(rows) == 3 and rows[0]["trial_id"] == best["trial_id"]
    full = [row for row in rows if row["status"] == "completed"]  # ASHA may stop some early
    assert rows[0]["status"] == "completed" and int(rows[0]["iterations"]) == 2
    assert float(rows[0]["objective"]) == max(float(row["objective"]) for row in full)
    _, children = _sweep_runs(store, "asha")
    by_id = {run.info.run_id: run for run in children}
    winner = by_id[best["mlflow_run_id"]]
    assert winner.data.tags["heser.trial_id"] == best["trial_id"]
    assert winner.data.metrics[sweep.OBJECTIVE] == pytest.approx(best["value"])
    assert best["value"] == max(run.data.metrics[sweep.OBJECTIVE] for run in children
                                if run.data.tags["heser.end"] == "completed")
    assert best["mode"] == "max" and best["mean_of"] == ["blender/head_psnr",
                                                         "blender/inpaint_psnr"]
    assert set(best["overrides"]) == set(BLENDER_KEYS)
    for key, value in best["overrides"].items():
        assert float(winner.data.params[key]) == pytest.approx(value)
        assert float(rows[0][key]) == pytest.approx(value)
        assert f"-S {key}={json.dumps(value)}" in best["command"]
    assert best["command"].startswith("dvc exp run -S ")


def test_restoring_a_finished_sweep_reports_the_same_best_without_new_runs(
        asha_sweep: dict, data: dict, store: MlflowClient):
    before = len(_runs(store))
    again = main(["restore", "--model", "blender", "--name", "asha", *_args(data)])
    assert again["best"] == asha_sweep["best"]
    assert len(_runs(store)) == before
    parent, children = _sweep_runs(store, "asha")
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}


# -- an interrupted sweep --------------------------------------------------------------------

def test_an_interrupted_sweep_continues_from_its_checkpoints_in_the_same_runs(
        data: dict, store: MlflowClient, tmp_path: Path):
    """Ctrl+C while trials run (FIFO: none is stopped early, so the ones that had reported
    must resume from their checkpoints), then `restore`."""
    overrides = {**data, "tune.scheduler.name": "fifo", "tune.blender.steps": 8}
    log = tmp_path / "driver.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [sys.executable, "pipelines/tune.py", "run", "--model", "blender", "--name", "cut",
             *_args(overrides)], cwd=ROOT, stdout=out, stderr=out,
            env={**os.environ, "MLFLOW_TRACKING_URI": store.tracking_uri})
    path = Path(data["tune.storage"]) / "cut"
    deadline = time.monotonic() + 300
    while not list(path.glob("*/checkpoint_000001")):  # a trial half-way through its 4 reports
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) != 0
    assert "tune: error: the sweep was interrupted" in log.read_text()
    parent, children = _sweep_runs(store, "cut")
    assert parent.info.status == "KILLED"
    assert "RUNNING" not in {run.info.status for run in children}

    main(["restore", "--model", "blender", "--name", "cut", *_args(data)])
    parent, children = _sweep_runs(store, "cut")
    assert len(children) == 3  # the resumed trials kept their runs
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}
    trials = tune.ExperimentAnalysis(str(path)).trials
    assert all(trial.last_result["training_iteration"] == 4 for trial in trials)
    resumed = [trial for trial in trials if trial.last_result["iterations_since_restore"] < 4]
    assert resumed  # continued from its Tune checkpoint, the trainer's exact-resume one
    assert {row["status"] for row in _table(data)} == {"completed"}


# -- the aligner -----------------------------------------------------------------------------

def test_aligner_sweep_minimises_the_held_out_l1(data: dict, store: MlflowClient):
    overrides = {**data, "tune.aligner.num_samples": 2, "tune.aligner.steps": 2,
                 "tune.aligner.report_every": 1,
                 "tune.aligner.overrides": {"aligner.train.eval_episodes": 2}}
    best = main(["run", "--model", "aligner", *_args(overrides)])["best"]
    assert best["mode"] == "min" and best["mean_of"] == ["l1"]
    rows = _table(data, "aligner")
    assert best["value"] == min(float(row["objective"]) for row in rows
                                if row["status"] == "completed")
    assert {run.info.status for run in _runs(store, "aligner")} == {"FINISHED"}


# -- configuration, checked before Ray starts ------------------------------------------------

def test_search_space_maps_each_distribution(tmp_path: Path):
    space = {"blender.tau": {"loguniform": [0.001, 0.1]}, "blender.loss.l1": {"uniform": [1, 20]},
             "blender.loss.cycle": {"choice": [0.5, 1]}, "blender.loss.adversarial": {
                 "grid": [0.1, 1]}}
    cfg = make_config(tmp_path, **{"tune.blender.search_space": space})
    built = sweep.search_space(cfg, "blender")
    tau, l1 = built["blender.tau"], built["blender.loss.l1"]
    assert isinstance(tau, Float) and (tau.lower, tau.upper) == (0.001, 0.1)
    assert type(tau.get_sampler()).__name__.endswith("LogUniform")  # Ray's private _LogUniform
    assert isinstance(l1, Float) and type(l1.get_sampler()).__name__.endswith("_Uniform")
    assert isinstance(built["blender.loss.cycle"], Categorical)
    assert built["blender.loss.adversarial"] == {"grid_search": [0.1, 1]}


@pytest.mark.parametrize(("space", "message"), [
    ({"blender.tau": {"normal": [0, 1]}}, "search_space.blender.tau.normal"),
    ({"blender.tau": {"loguniform": [0, 1]}}, "blender.tau: loguniform needs 0 < low < high"),
    ({"blender.tau": {"uniform": [0.1]}}, "blender.tau: uniform needs [low, high]"),
    ({"blender.tau": {"choice": []}}, "blender.tau: choice needs at least one value"),
    ({"blender.tau": {"choice": [1], "grid": [2]}}, "give exactly one distribution"),
])
def test_a_bad_distribution_is_refused_when_params_load(tmp_path: Path, space, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_config(tmp_path, **{"tune.blender.search_space": space})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"tune.blender.search_space": {"blender.tauu": {"choice": [0.1]}}},
     "tune.blender.search_space: blender.tauu=0.1: blender.tauu: no such parameter"),
    ({"tune.blender.search_space": {"blender.size": {"choice": [128, 96]}}},
     "blender.size=96: invalid parameters\n  blender: .*multiple of 64"),
    ({"tune.blender.search_space": {"blender.tau": {"uniform": [0, 0.1]}}},
     "blender.tau=0: invalid parameters\n  blender.tau: Input should be greater than 0"),
    ({"tune.blender.overrides": {"blender.train.stepz": 3}},
     "tune.blender.overrides: blender.train.stepz: no such parameter"),
    ({"tune.scheduler.grace_period": 9}, "grace_period \\(9\\) is more than the 4 reports"),
])
def test_a_sweep_the_config_cannot_run_is_refused_before_ray_starts(tmp_path: Path, overrides,
                                                                    message):
    cfg = make_config(tmp_path, **overrides)
    with pytest.raises(ConfigError, match=message):
        sweep.search_space(cfg, "blender")
        sweep.scheduler(cfg, "blender")


def test_cli_names_the_bad_key_and_starts_nothing(tmp_path: Path, capsys):
    bad = {"tune.storage": str(tmp_path / "sweeps"),
           "tune.blender.search_space": {"blender.loss.l2": {"uniform": [1, 2]}}}
    with pytest.raises(SystemExit, match="tune: error: .*blender.loss.l2: no such parameter"):
        main(["run", "--model", "blender", *_args(bad)])
    assert not ray.is_initialized() and not (tmp_path / "sweeps").exists()


def test_steps_must_be_whole_reports(tmp_path: Path):
    with pytest.raises(ConfigError, match="steps \\(10\\) must be a multiple of report_every"):
        make_config(tmp_path, **{"tune.blender.steps": 10, "tune.blender.report_every": 4})

