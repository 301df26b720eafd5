"""The shared GAN trainer on the real aligner task, tiny sizes: exact resume from a checkpoint,
and a two-process data-parallel step (gloo) equal to one process on the combined batch."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from heser.config import Config
from heser.tracking import Tracker
from heser.train.checkpoint import load_checkpoint
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer, fit
from tests.conftest import make_config, read_rgb

TINY = {
    "aligner.size": 32, "aligner.k": 2, "aligner.mlp_hidden": 32,
    "aligner.portrait.width": 8, "aligner.portrait.stages": 3, "aligner.portrait.max_channels": 32,
    "aligner.pose.width": 0.25, "aligner.pose.input_size": 32,
    "aligner.expression.width": 0.25, "aligner.expression.input_size": 32,
    "aligner.generator.base_channels": 8, "aligner.generator.max_channels": 32,
    "aligner.discriminator.base_channels": 8, "aligner.discriminator.max_channels": 32,
    "aligner.train.batch_size": 4, "aligner.train.workers": 0, "aligner.train.log_every": 1,
    "aligner.train.checkpoint_every": 2, "aligner.train.sample_every": 1000,
}
FACES = ["images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png",
         "images/dt_woman_F_crop256.png", "images/st_woman_B_happy1.png"]

def _tiny(tmp_path: Path, **overrides: object) -> Config:
    return make_config(tmp_path, **{**TINY, **overrides})

def _image(name: str, size: int = 64) -> torch.Tensor:
    rgb = torch.from_numpy(read_rgb(name)).permute(2, 0, 1).float()[None] / 127.5 - 1
    return torch.nn.functional.interpolate(rgb, size=(size, size), mode="area")[0]

def _batches(n: int) -> list[dict]:
    """Episodes from real portraits: sources are the other faces' flips (content, not meaning,
    is what these tests need: the same numbers on both sides)."""
    faces = [_image(name) for name in FACES]
    out = []
    for b in range(n):
        order = [(b + i) % len(faces) for i in range(len(faces))]
        out.append({
            "sources": torch.stack([torch.stack([faces[j].flip(-1), faces[(j + 1) % 4]])
                                    for j in order]),
            "target": torch.stack([faces[j] for j in order]),
            "target_key": [f"face{j}__v__{b:06d}" for j in order],
        })
    return out

def _trainer(cfg: Config, info: DistInfo) -> GanTrainer:
    from heser.train.aligner import AlignerTask

    torch.manual_seed(0)
    return GanTrainer(AlignerTask(cfg, info.device), cfg.aligner.train, info)

ONE = DistInfo(0, 1, torch.device("cpu"))

def test_resume_continues_with_identical_losses(tmp_path: Path):
    batches = _batches(3)
    run = lambda cfg, ckpt, history: fit(  # noqa: E731
        _trainer(cfg, ONE), lambda epoch: batches, Tracker("x", "x", {}, False), ckpt, history)
    straight: list[dict] = []
    run(_tiny(tmp_path, **{"aligner.train.steps": 5}), tmp_path / "straight.pt", straight)
    ckpt = tmp_path / "resumed.pt"
    run(_tiny(tmp_path, **{"aligner.train.steps": 2}), ckpt, [])
    assert load_checkpoint(ckpt)["step"] == 2
    resumed: list[dict] = []  # as in a new process: the first two rows come from the checkpoint
    run(_tiny(tmp_path, **{"aligner.train.steps": 5}), ckpt, resumed)
    assert [row["step"] for row in resumed] == [1, 2, 3, 4, 5]
    for a, b in zip(straight, resumed):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)

def test_resume_with_another_process_count_is_refused(tmp_path: Path):
    ckpt = tmp_path / "one.pt"
    cfg = _tiny(tmp_path, **{"aligner.train.steps": 1})
    fit(_trainer(cfg, ONE), lambda epoch: _batches(1), Tracker("x", "x", {}, False), ckpt, [])
    two_processes = GanTrainer.__new__(GanTrainer)  # no process group needed for the check
    two_processes.dist = DistInfo(0, 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="1-process run; resume it with as many"):
        two_processes.load_state_dict(load_checkpoint(ckpt))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

def _ddp_rank(rank: int, port: int, cfg: Config, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        torch.set_num_threads(1)
        trainer = _trainer(cfg, DistInfo(rank, 2, torch.device("cpu")))
        # the wrappers are the trainer's, built once; the task keeps one bare module per network
        assert isinstance(trainer.generator, DistributedDataParallel)
        assert trainer.generator.module is trainer.task.generator
        assert trainer.discriminator.module is trainer.task.discriminator
        batch = _batches(1)[0]
        half = {k: v[rank * 2:(rank + 1) * 2] for k, v in batch.items()}
        trainer.train_step(half)
        if rank == 0:
            torch.save(trainer.task.generator.state_dict(), out)
    finally:
        dist.destroy_process_group()

def test_two_process_step_equals_one_process_on_the_combined_batch(tmp_path: Path):
    cfg = _tiny(tmp_path)
    torch.set_num_threads(1)
    single = _trainer(cfg, ONE)
    before = {k: v.clone() for k, v in single.task.generator.state_dict().items()}
    single.train_step(_batches(1)[0])
    expected = single.task.generator.state_dict()
    out = tmp_path / "rank0.pt"
    mp.spawn(_ddp_rank, args=(_free_port(), cfg, out), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    lr = cfg.aligner.train.optim.lr_g
    moved = close = total = 0
    for name, value in expected.items():
        if not value.is_floating_point():
            continue
        diff = (got[name] - value).abs()
        assert diff.max() <= 2 * lr + 1e-7, name  # at most an Adam sign flip on a ~0 gradient
        moved += int(((value - before[name]).abs() > lr / 2).sum())
        close += int((diff <= 1e-6).sum())
        total += value.numel()
    assert moved > total // 2  # the step really moved the weights
    assert close / total > 0.999, close / total
    np.testing.assert_equal(sorted(got), sorted(expected))


def test_an_episodes_random_stream_does_not_depend_on_its_batch():
    from heser.train.gan import episode_generators

    alone = episode_generators(7, 3, ["b__v__000001"])[0]
    batched = episode_generators(7, 3, ["a__v__000000", "b__v__000001"])[1]
    assert torch.equal(torch.rand(5, generator=alone), torch.rand(5, generator=batched))
    other_step = episode_generators(7, 4, ["b__v__000001"])[0]
    assert not torch.equal(torch.rand(5, generator=other_step),
                           torch.rand(5, generator=episode_generators(7, 3, ["b__v__000001"])[0]))
