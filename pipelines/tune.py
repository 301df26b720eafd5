"""Ray Tune sweeps of the blender (tau and its loss weights) or the aligner (its loss weights),
tracked in MLflow: one parent run per sweep, a nested run per trial.

    python pipelines/tune.py run --model blender [--name NAME] [--set KEY=VALUE ...]
    python pipelines/tune.py restore --model blender [--name NAME]   # continue an interrupted one

The sweep (space, trials, steps, scheduler, resources) is params.yaml ``tune``; each trial trains
through the DVC stage's trainer (heser.train.sweep). The experiment lives in
``<tune.storage>/<name>`` (name: the model); the best configuration goes to
``reports/tune_<model>.json`` with a `dvc exp run -S ...` line, every trial to
``reports/tune_<model>.csv``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import ray
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import BasicVariantGenerator

from heser.cluster import ray_init_kwargs
from heser.config import (
    Config,
    ConfigError,
    add_config_arguments,
    config_from_args,
    exit_on_error,
)
from heser.env import configure_tool_state
from heser.tracking import Tracker, run_name
from heser.train import sweep

STATE = "heser_sweep.json"  # in the experiment dir: the model, config and MLflow parent run


def experiment_dir(cfg: Config, name: str) -> Path:
    return cfg.path(cfg.tune.storage) / name


def start(cfg: Config, model: str, name: str) -> dict[str, Any]:
    """A new sweep, its config checked before Ray starts; returns its summary (``finish``)."""
    path = experiment_dir(cfg, name)
    if path.exists():
        raise ConfigError(f"{path} exists: continue that sweep with `restore --name {name}`, "
                          "or remove it, or choose another --name")
    space, tuning = sweep.search_space(cfg, model), sweep.scheduler(cfg, model)
    parent = Tracker(sweep.experiment_name(model), run_name("sweep", name),
                     _sweep_params(cfg, model), enabled=True)
    path.mkdir(parents=True)
    (path / STATE).write_text(json.dumps({"model": model, "name": name,
                                          "parent_run_id": parent.run_id,
                                          "config": cfg.model_dump(mode="json")}, indent=1))
    with ray_session(cfg):
        return finish(_tuner(cfg, model, path, parent.run_id, space, tuning), cfg, model, parent)


def _sweep_params(cfg: Config, model: str) -> dict[str, Any]:
    """The parent run's parameters: the sweep's settings and the values it does not search."""
    spec = getattr(cfg.tune, model)
    base = {key: value for key, value in sweep.sweep_params(cfg, model).items()
            if key not in spec.search_space}
    shared = cfg.tune.model_dump(mode="json", include={"seed", "max_concurrent", "resources",
                                                       "scheduler"})
    return {"tune": {**spec.model_dump(mode="json"), **shared}, "base": base}


def _tuner(cfg: Config, model: str, path: Path, parent_run_id: str, space: dict[str, Any],
           scheduler: TrialScheduler) -> tune.Tuner:
    spec = getattr(cfg.tune, model)
    callbacks = [sweep.TrialRuns(model, parent_run_id, sweep.sweep_params(cfg, model),
                                 sweep.reports_per_trial(cfg, model), mlflow.get_tracking_uri()),
                 sweep.DropWorkingCheckpoint(path)]
    return tune.Tuner(
        sweep.trainable(cfg, model, path), param_space=space,
        tune_config=tune.TuneConfig(
            metric=sweep.OBJECTIVE, mode=spec.mode, num_samples=spec.num_samples,
            scheduler=scheduler, trial_dirname_creator=sweep.trial_dirname,
            search_alg=BasicVariantGenerator(random_state=cfg.tune.seed,
                                             max_concurrent=cfg.tune.max_concurrent)),
        run_config=tune.RunConfig(
            name=path.name, storage_path=str(path.parent), callbacks=callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest: resume there
            failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures)))


def restore(path: Path) -> dict[str, Any]:
    """Continue the sweep in ``path``: unfinished and errored trials resume from their last
    checkpoint, and in the same MLflow runs."""
    if not tune.Tuner.can_restore(path) or not (path / STATE).exists():
        raise ConfigError(f"{path}: no sweep to restore there")
    state = json.loads((path / STATE).read_text())
    cfg, model = Config.model_validate(state["config"]), state["model"]
    parent = Tracker(sweep.experiment_name(model), state["name"], {}, enabled=True,
                     run_id=state["parent_run_id"])
    with ray_session(cfg):
        tuner = tune.Tuner.restore(str(path), sweep.trainable(cfg, model, path),
                                   resume_errored=True)
        return finish(tuner, cfg, model, parent)


def finish(tuner: tune.Tuner, cfg: Config, model: str, parent: Tracker) -> dict[str, Any]:
    """Run the trials; then write the reports and end the parent run FINISHED, or, if the
    sweep was interrupted or failed, end it and its running trials KILLED or FAILED (a
    ``restore`` reopens them)."""
    client = MlflowClient()
    experiment = client.get_run(parent.run_id).info.experiment_id
    try:
        grid = tuner.fit()
    except BaseException as exc:
        _end(client, experiment, parent,
             "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    runs = sweep.child_runs(client, experiment, parent.run_id)
    if sweep.interrupted(grid, cfg, model, client, runs):
        _end(client, experiment, parent, "KILLED")
        raise RuntimeError(f"the sweep was interrupted; continue it with `python "
                           f"pipelines/tune.py restore --name {Path(grid.experiment_path).name}`")
    rows = sweep.trial_rows(grid, cfg, model, runs)
    best = sweep.best_config(rows, cfg, model, parent.run_id)
    paths = sweep.write_results(cfg.path(cfg.paths.reports), model, rows, best)
    parent.metrics({f"best/{sweep.OBJECTIVE}": best["value"]}, step=0)
    for path in paths:
        parent.artifact(path, "reports")
    mlflow.set_tags({"best.trial_id": best["trial_id"], "best.run_id": best["mlflow_run_id"]})
    parent.end()
    return {"best": best, "trials": len(rows), "reports": [str(p) for p in paths]}


def _end(client: MlflowClient, experiment: str, parent: Tracker, status: str) -> None:
    sweep.end_unfinished(client, experiment, parent.run_id, status)
    parent.end(status)


@contextmanager
def ray_session(cfg: Config) -> Iterator[None]:
    """Local Ray (or the configured cluster) through heser.cluster, unless one is running."""
    owned = not ray.is_initialized()
    if owned:
        ray.init(**ray_init_kwargs(cfg.ray))
    try:
        yield
    finally:
        if owned:
            ray.shutdown()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python pipelines/tune.py",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (("run", "start a sweep"),
                          ("restore", "continue an interrupted sweep from its experiment dir")):
        one = sub.add_parser(command, help=text)
        one.add_argument("--model", choices=sorted(sweep.TASKS), required=True)
        one.add_argument("--name", help="experiment name under tune.storage (default: the model)")
        add_config_arguments(one, "tune.blender.num_samples=8" + (
            " (restore: only where to find the sweep)" if command == "restore" else ""))
    args = parser.parse_args(argv)
    configure_tool_state()
    with exit_on_error("tune", RuntimeError):
        cfg = config_from_args(args)
        name = args.name or args.model
        if args.command == "run":
            result = start(cfg, args.model, name)
        else:
            result = restore(experiment_dir(cfg, name))
    print(json.dumps(result["best"], indent=2))
    return result


if __name__ == "__main__":
    main()
