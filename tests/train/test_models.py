"""The registry of trainable models: one entry per model, and every caller reads it."""

from __future__ import annotations

import inspect
from pathlib import Path

from heser.config import Config
from heser.swap import model_paths
from heser.train.gan import GanTask
from heser.train.models import ALIGNER, BLENDER, MODELS
from heser.train.sweep import TASKS


def test_each_entry_says_its_stage_files_and_parameters(tmp_config: Config, tmp_path: Path):
    assert ALIGNER.stage == "train_aligner" and ALIGNER.experiment == "heser-aligner"
    assert ALIGNER.checkpoint(tmp_config) == tmp_path / "models" / "aligner.pt"
    assert ALIGNER.episode_k(tmp_config) == tmp_config.aligner.k and BLENDER.episode_k(
        tmp_config) == 1
    files = BLENDER.reports(tmp_path)
    assert (files.metrics, files.losses, files.samples, files.timings) == (
        tmp_path / "blender.json", tmp_path / "blender_losses.csv",
        tmp_path / "blender_samples.png", tmp_path / "timings" / "train_blender.json")
    assert set(BLENDER.params(tmp_config)) == {"blender", "masks"}
    assert BLENDER.train(tmp_config) is tmp_config.blender.train


def test_the_tasks_sweep_and_swap_use_the_registry(tmp_config: Config):
    assert set(TASKS) == set(MODELS)
    assert all(task.model is MODELS[name] for name, task in TASKS.items())
    assert model_paths(tmp_config) == (ALIGNER.checkpoint(tmp_config),
                                       BLENDER.checkpoint(tmp_config))


def test_both_tasks_have_every_method_of_the_protocol_with_its_parameters():
    methods = {name: inspect.signature(value) for name, value in vars(GanTask).items()
               if inspect.isfunction(value) and not name.startswith("_")}
    assert {"evaluate", "preview", "fake", "generator_loss"} <= set(methods)
    for task in TASKS.values():
        for name, signature in methods.items():
            assert list(inspect.signature(getattr(task, name)).parameters)[:len(
                signature.parameters)] == list(signature.parameters), (task, name)
