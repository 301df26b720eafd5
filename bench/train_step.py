"""Aligner training throughput: episodes/s and peak memory of one GAN step (D phase + G phase).

    python bench/train_step.py [--steps 6] [--set KEY=VALUE ...]     # the CPU profile
    python bench/train_step.py --set profile=paper                   # 512 px, bf16 on a GPU

Batches are random tensors of the configured shapes (the sampler is measured elsewhere), so the
figure is the model's cost alone. MFU is printed on a GPU: measured FLOP/s (from the profiler's
FLOP count of one step) over the device's peak bf16 dense FLOP/s given by --peak-tflops.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from heser.config import load_config, parse_override
from heser.env import configure_tool_state
from heser.train.aligner import AlignerTask
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer


def _batch(cfg, batch_size: int, crop: int) -> dict:
    k = cfg.aligner.k
    return {"sources": torch.rand(batch_size, k, 3, crop, crop) * 2 - 1,
            "target": torch.rand(batch_size, 3, crop, crop) * 2 - 1,
            "target_key": [f"bench__v__{i:06d}" for i in range(batch_size)]}


def _step_flops(trainer: GanTrainer, batch: dict) -> float:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities, with_flops=True) as prof:
        trainer.train_step(batch)
    return float(sum(event.flops for event in prof.key_averages()))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--steps", type=int, default=6)
    args.add_argument("--warmup", type=int, default=2)
    args.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    opts = args.parse_args()
    configure_tool_state()
    cfg = load_config("params.yaml", dict(parse_override(s) for s in opts.set))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    task = AlignerTask(cfg, device)
    trainer = GanTrainer(task, cfg.aligner.train, DistInfo(0, 1, device))
    batch = _batch(cfg, cfg.aligner.train.batch_size, cfg.crop.size)
    for _ in range(opts.warmup):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(opts.steps):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / opts.steps
    a = cfg.aligner
    print(f"device {device}, profile {cfg.profile}, I_A {a.size} px from {cfg.crop.size} px crops, "
          f"K={a.k}, batch {a.train.batch_size}, perceptual {task.perceptual_name}")
    print(f"step {seconds * 1000:.0f} ms, {a.train.batch_size / seconds:.2f} episodes/s, "
          f"{a.train.batch_size * (a.k + 1) / seconds:.1f} frames/s")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        flops = _step_flops(trainer, batch)
        mfu = flops / seconds / (opts.peak_tflops * 1e12)
        print(f"{flops / 1e12:.2f} TFLOP/step, MFU {mfu:.1%}")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
