"""bench/train_step.py, as bench/gpu/run.sh runs it: the dry run of both models writes every
figure, and the FLOP count it reports MFU from."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"model", "profile", "size", "crop", "k", "batch", "perceptual", "device", "threads",
        "torch", "bf16", "channels_last", "compile", "steps", "warmup", "warmup_s", "step_ms",
        "cpu_ms_per_step", "episodes_per_s", "frames_per_s", "peak_memory_gib",
        "peak_memory_kind", "tflop_per_step", "mfu", "peak_tflops"}


@pytest.fixture(scope="module")
def train_step():
    spec = importlib.util.spec_from_file_location("bench_train_step",
                                                  ROOT / "bench" / "train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared by the whole test run
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("model", "flags"), [("aligner", []),
                                              ("blender", ["--channels-last"])])
def test_dry_run_writes_every_figure(train_step, one_thread, model, flags, tmp_path,
                                     monkeypatch):
    out = tmp_path / "step.json"
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["train_step.py", "--model", model, "--dry-run",
                                      "--json", str(out), *flags])
    train_step.main()
    result = json.loads(out.read_text())
    assert set(result) == KEYS
    assert (result["model"], result["size"], result["batch"]) == (model, 64, 2)
    assert result["bf16"] is False  # the trainer's default on a CPU
    assert result["channels_last"] is bool(flags)
    assert result["episodes_per_s"] == pytest.approx(2 / (result["step_ms"] / 1000))
    assert result["tflop_per_step"] > 0
    assert result["mfu"] is None  # a CPU has no peak bf16 rate to compare with


def test_flop_count_of_a_convolution_forward_and_backward(train_step):
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    forward = 2 * 8 * 3 * 9 * 16 * 16  # two FLOPs per multiply-add
    with train_step.FlopCount() as counter:
        conv(x).sum().backward()
    assert counter.flops == 3 * forward  # the output, then the input and weight gradients
    with train_step.FlopCount() as counter, torch.no_grad():
        conv(x)
    assert counter.flops == forward
