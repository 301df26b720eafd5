"""Ray Tune sweeps over a model's loss weights (and the blender's tau): the library half of
pipelines/tune.py.

The search space, budget, objective and scheduler come from params.yaml ``tune`` and are checked
here before Ray starts (every dotted key must exist, every bound and choice must make a valid
config). A trial is the DVC stage's training (heser.train.stage.train_stage) with the sampled
values; at each held-out evaluation it reports the objective to Tune together with the trainer's
own exact-resume checkpoint, so the scheduler can stop it there and ``Tuner.restore`` continues
it from there. MLflow runs belong to the driver (``TrialRuns``): a trial the scheduler stops is
killed, so it could not end a run of its own.
"""

from __future__ import annotations

import csv
import json
import math
import shlex
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from heser.config import Config, ConfigError, TuneModel, with_overrides
from heser.io import atomic_path, save_png
from heser.tracking import flatten
from heser.train.aligner import AlignerTask
from heser.train.blender import BlenderTask
from heser.train.gan import GanTask
from heser.train.stage import Evaluation, StageOptions, train_stage

# the models a sweep can train, by registry name (heser.train.models)
TASKS: dict[str, type[GanTask]] = {task.model.name: task for task in (AlignerTask, BlenderTask)}
OBJECTIVE = "objective"  # the reported mean of the model's `tune.<model>.metric` keys
SAMPLES = "samples.png"  # the held-out sample grid saved in every trial checkpoint
SCRATCH = "scratch"  # in the experiment dir: <trial id>/, each trial's working files
DISTRIBUTIONS: dict[str, Callable[[list[Any]], Any]] = {
    "uniform": lambda args: tune.uniform(*args),
    "loguniform": lambda args: tune.loguniform(*args),
    "choice": tune.choice,
    "grid": tune.grid_search,
}
TRIAL_ID_TAG = "heser.trial_id"


def experiment_name(model: str) -> str:
    """The MLflow experiment of a model's sweeps (one parent run per sweep)."""
    return f"heser-tune-{model}"


# -- configuration ---------------------------------------------------------------------------

def trial_base(cfg: Config, model: str) -> Config:
    """The config every trial starts from: ``tune.<model>.overrides``, then the sweep's budget
    (``steps``) and a checkpoint at every report (what Tune keeps and restores)."""
    spec: TuneModel = getattr(cfg.tune, model)
    fixed = {**spec.overrides, f"{model}.train.steps": spec.steps,
             f"{model}.train.checkpoint_every": spec.report_every}
    return with_overrides(cfg, fixed, f"tune.{model}.overrides")


def search_space(cfg: Config, model: str) -> dict[str, Any]:
    """Tune's param_space from ``tune.<model>.search_space``, checked against the config: an
    unknown key or a bound the parameter refuses is a ConfigError naming it."""
    base = trial_base(cfg, model)
    space: dict[str, Any] = {}
    for key, spec in getattr(cfg.tune, model).search_space.items():
        (distribution, args), = spec.items()
        for value in args:  # the bounds of uniform / loguniform, each value of choice / grid
            with_overrides(base, {key: value}, f"tune.{model}.search_space: {key}={value!r}")
        space[key] = DISTRIBUTIONS[distribution](args)
    return space


def reports_per_trial(cfg: Config, model: str) -> int:
    spec: TuneModel = getattr(cfg.tune, model)
    return spec.steps // spec.report_every


def scheduler(cfg: Config, model: str) -> TrialScheduler:
    """ASHA counts time in reports (training_iteration); FIFO lets every trial finish."""
    chosen, reports = cfg.tune.scheduler, reports_per_trial(cfg, model)
    if chosen.name == "fifo":
        return FIFOScheduler()
    if chosen.grace_period > reports:
        raise ConfigError(f"tune.scheduler.grace_period ({chosen.grace_period}) is more than the "
                          f"{reports} reports of a tune.{model} trial")
    return ASHAScheduler(time_attr=TRAINING_ITERATION, max_t=reports,
                         grace_period=chosen.grace_period,
                         reduction_factor=chosen.reduction_factor)


# -- the trial -------------------------------------------------------------------------------

def run_trial(config: dict[str, Any], model: str, base: Config, scratch: Path) -> None:
    """One trial: ``train_stage`` on ``base`` with the sampled values, its files in
    ``scratch/<trial id>``. The trainer's checkpoint there is what Tune copies at every report,
    so a restored trial resumes exactly. (Not in Tune's trial dir: Tune syncs that one, so a
    working copy there would be stored twice more.)"""
    cfg = with_overrides(base, config, "trial")
    folder = scratch / tune.get_context().get_trial_id()
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{model}.pt"
    weights.unlink(missing_ok=True)  # only Tune's checkpoint says where this trial stands
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as saved:
            shutil.copyfile(Path(saved) / weights.name, weights)
    keys = getattr(cfg.tune, model).metric
    train_stage(cfg, TASKS[model], StageOptions(
        checkpoint=weights, reports=folder / "reports", track=False,
        on_evaluate=partial(_report, folder, keys)))


def _report(folder: Path, keys: list[str], evaluation: Evaluation) -> None:
    """Report the objective, the held-out metrics and the latest losses with the checkpoint
    just saved (plus the sample grid, which the driver logs when the trial ends)."""
    missing = sorted(set(keys) - set(evaluation.metrics))
    if missing:
        raise ValueError(f"tune metric {missing} is not a held-out metric of this model "
                         f"({sorted(evaluation.metrics)})")
    save_png(folder / SAMPLES, evaluation.preview)
    metrics = {OBJECTIVE: sum(evaluation.metrics[key] for key in keys) / len(keys),
               TIMESTEPS_TOTAL: evaluation.step,
               **{f"val/{key}": value for key, value in evaluation.metrics.items()},
               **{f"train/{key}": value for key, value in evaluation.losses.items()}}
    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def trainable(cfg: Config, model: str, experiment: Path):
    """``run_trial`` bound to the trial base config and the scratch dir of ``experiment``, with
    the resources of one trial."""
    resources = cfg.tune.resources
    bound = tune.with_parameters(run_trial, model=model, base=trial_base(cfg, model),
                                 scratch=experiment / SCRATCH)
    return tune.with_resources(bound, {"cpu": resources.cpu, "gpu": resources.gpu})


def trial_dirname(trial: Trial) -> str:
    """Trial folders named by trial id alone (Tune's default repeats the whole config)."""
    return trial.trial_id


def trial_run_name(trial_id: str) -> str:
    """A trial's MLflow run: its trial id, as in reports/tune_<model>.csv and the trial dir."""
    return f"trial {trial_id}"


def trial_status(failed: bool, iterations: int, reports: int) -> str:
    """How a trial ended: ``error``, ``completed`` (every report of its budget) or
    ``stopped`` (by the scheduler, early)."""
    return "error" if failed else "completed" if iterations >= reports else "stopped"


# -- MLflow ----------------------------------------------------------------------------------

class TrialRuns(MLflowLoggerCallback):
    """Ray's MLflow logger, nested: one child run per trial under the sweep's parent run.

    It runs on the driver, so a trial the scheduler stops (its worker is killed) still has its
    run ended, FINISHED; an errored trial's run ends FAILED. A trial that ``Tuner.restore``
    resumes continues its earlier run rather than opening a second one. Each run gets the whole
    model section as parameters with the sampled values in it, the reported metrics at the
    trainer's step, and the last held-out sample grid."""

    def __init__(self, model: str, parent_run_id: str, params: dict[str, str], reports: int,
                 tracking_uri: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name(model),
                         tags={MLFLOW_PARENT_RUN_ID: parent_run_id, "heser.model": model})
        self.parent_run_id, self.params, self.reports = parent_run_id, params, reports

    def _client(self) -> MlflowClient:
        return MlflowClient(self.tracking_uri)

    def log_trial_start(self, trial: Trial) -> None:
        if trial in self._trial_runs:
            return
        client = self._client()
        run_id = child_runs(client, self.mlflow_util.experiment_id,
                            self.parent_run_id).get(trial.trial_id)
        if run_id is not None:  # resumed by Tuner.restore: the same run, running again
            client.update_run(run_id, status="RUNNING")
        else:
            run = self.mlflow_util.start_run(run_name=trial_run_name(trial.trial_id), tags={
                **self.tags, "trial_name": str(trial), TRIAL_ID_TAG: trial.trial_id})
            run_id = run.info.run_id
            params = {**self.params, **{key: str(v) for key, v in trial.config.items()}}
            client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
        self._trial_runs[trial] = run_id

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        """Our metrics only (not Tune's bookkeeping), at the trainer's step."""
        ours = {key: value for key, value in result.items()
                if key.startswith(("val/", "train/")) or key in (OBJECTIVE, TRAINING_ITERATION)}
        super().log_trial_result(iteration, trial, {**ours, TIMESTEPS_TOTAL: result.get(
            TIMESTEPS_TOTAL)})

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        run_id = self._trial_runs[trial]
        client = self._client()
        iterations = int(trial.last_result.get(TRAINING_ITERATION, 0))
        client.set_tag(run_id, "heser.end", trial_status(failed, iterations, self.reports))
        if trial.checkpoint is not None:
            with trial.checkpoint.as_directory() as saved:
                if (Path(saved) / SAMPLES).exists():
                    client.log_artifact(run_id, str(Path(saved) / SAMPLES), "samples")
        super().log_trial_end(trial, failed)


class DropWorkingCheckpoint(tune.Callback):
    """When a trial ends, delete the trainer's working copy of its checkpoint: Tune keeps the
    copy it took at the last report (what a restore resumes from), and a sweep of full-size
    models would otherwise hold two of each (the blender's is ~70 MB). A trial the scheduler
    stops is killed, so the trial could not do this itself."""

    def __init__(self, experiment: Path):
        self.scratch = experiment / SCRATCH

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info) -> None:
        self._drop(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._drop(trial)

    def _drop(self, trial: Trial) -> None:
        for weights in (self.scratch / trial.trial_id).glob("*.pt"):
            weights.unlink(missing_ok=True)


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """trial id -> run id of a sweep's trial runs."""
    runs = client.search_runs([experiment_id],
                              f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                              max_results=10_000)
    return {run.data.tags[TRIAL_ID_TAG]: run.info.run_id for run in runs
            if TRIAL_ID_TAG in run.data.tags}


def end_unfinished(client: MlflowClient, experiment_id: str, parent_run_id: str,
                   status: str) -> None:
    """End the trial runs an interrupted sweep left RUNNING (a restore reopens them)."""
    for run_id in child_runs(client, experiment_id, parent_run_id).values():
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=status)


def interrupted(grid: tune.ResultGrid, cfg: Config, model: str, client: MlflowClient,
                runs: dict[str, str]) -> bool:
    """Whether ``Tuner.fit`` returned before the sweep was done (Ctrl+C): trials not created
    yet, or trials whose run Tune never ended (its cleanup marks them TERMINATED in memory, but
    the saved experiment state has them running, and a restore resumes them)."""
    spec: TuneModel = getattr(cfg.tune, model)
    grids = [len(args) for entry in spec.search_space.values()
             for name, args in entry.items() if name == "grid"]
    if len(grid) < spec.num_samples * math.prod(grids):
        return True
    statuses = [client.get_run(run_id).info.status for run_id in runs.values()]
    return len(runs) < len(grid) or "RUNNING" in statuses


def sweep_params(cfg: Config, model: str) -> dict[str, str]:
    """The parameters of every trial run: the trial base config's model section, flattened."""
    section = getattr(trial_base(cfg, model), model).model_dump(mode="json")
    return {key: str(value) for key, value in flatten({model: section}).items()}


# -- results ---------------------------------------------------------------------------------

def trial_rows(grid: tune.ResultGrid, cfg: Config, model: str,
               runs: dict[str, str]) -> list[dict[str, Any]]:
    """One row per trial, best first (see ``_rank``): sampled values, last objective and
    metrics, iterations, status (completed, stopped by the scheduler, error)."""
    spec: TuneModel = getattr(cfg.tune, model)
    reports = reports_per_trial(cfg, model)
    rows = []
    for result in grid:
        trial_id, metrics = Path(result.path).name, result.metrics or {}
        iterations = int(metrics.get(TRAINING_ITERATION, 0))
        status = trial_status(result.error is not None, iterations, reports)
        rows.append({"trial_id": trial_id, "status": status, "iterations": iterations,
                     "step": metrics.get(TIMESTEPS_TOTAL), OBJECTIVE: metrics.get(OBJECTIVE),
                     **{key: result.config.get(key) for key in spec.search_space},
                     **{f"val/{key}": metrics.get(f"val/{key}") for key in spec.metric},
                     "mlflow_run_id": runs.get(trial_id)})
    return sorted(rows, key=partial(_rank, spec.mode))


def _rank(mode: str, row: dict[str, Any]) -> tuple[bool, bool, float]:
    """Trials that trained the full budget first, then by their last objective. A trial the
    scheduler stopped reports a value from earlier in training, not comparable with a final
    one (an early low L1 can look better than a longer run's), and the recommendation is for a
    run of full length."""
    value = row[OBJECTIVE]
    missing = value is None or not math.isfinite(value)
    return (row["status"] != "completed", missing,
            0.0 if missing else (-value if mode == "max" else value))


def best_config(rows: list[dict[str, Any]], cfg: Config, model: str,
                parent_run_id: str) -> dict[str, Any]:
    """The best trial (``rows[0]``: the best of those that trained the full budget) as dotted
    params overrides and a `dvc exp run` line."""
    spec: TuneModel = getattr(cfg.tune, model)
    best = rows[0]
    if best[OBJECTIVE] is None or not math.isfinite(best[OBJECTIVE]):
        raise RuntimeError(f"no {model} trial reported a metric; see the trial errors above")
    overrides = {key: best[key] for key in spec.search_space}
    command = " ".join(["dvc exp run", *(f"-S {shlex.quote(f'{k}={json.dumps(v)}')}"
                                         for k, v in overrides.items())])
    return {"model": model, "metric": OBJECTIVE, "mean_of": spec.metric, "mode": spec.mode,
            "value": best[OBJECTIVE], "trial_id": best["trial_id"],
            "iterations": best["iterations"], "step": best["step"],
            "mlflow_run_id": best["mlflow_run_id"], "mlflow_parent_run_id": parent_run_id,
            "overrides": overrides, "command": command}


def write_results(reports: Path, model: str, rows: list[dict[str, Any]],
                  best: dict[str, Any]) -> tuple[Path, Path]:
    """reports/tune_<model>.json (the best configuration) and .csv (every trial)."""
    table, summary = reports / f"tune_{model}.csv", reports / f"tune_{model}.json"
    with atomic_path(table) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(summary) as tmp:
        tmp.write_text(json.dumps(best, indent=2) + "\n")
    return summary, table
