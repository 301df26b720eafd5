"""Training throughput: episodes/s and peak memory of one GAN step (D phase + G phase) of the
aligner or the blender.

    python bench/train_step.py [--model aligner|blender] [--steps 6] [--set KEY=VALUE ...]
    python bench/train_step.py --set profile=paper                   # 512 px, bf16 on a GPU

Batches are random tensors of the configured shapes (the sampler is measured elsewhere), so the
figure is the model's cost alone. The blender's label maps are a synthetic head-and-shoulders
layout (:func:`head_layout`): the cost of its colour references depends on the region sizes,
which random labels would not have. MFU is printed on a GPU: measured FLOP/s (from the
profiler's FLOP count of one step) over the device's peak bf16 dense FLOP/s given by
--peak-tflops.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from heser.config import load_config, parse_override
from heser.env import configure_tool_state
from heser.face.labels import Region
from heser.train.aligner import AlignerTask
from heser.train.blender import BlenderTask
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer


def head_layout(size: int, shift: float = 0.0) -> torch.Tensor:
    """A uint8 [size, size] label map shaped like a head-and-shoulders crop: shoulders, neck,
    hair, face, eyes, nose and lips, the head moved right by ``shift`` of the side."""
    y, x = torch.meshgrid(*(torch.linspace(0, 1, size),) * 2, indexing="ij")
    x = x - shift
    labels = torch.zeros(size, size, dtype=torch.uint8)
    parts = [  # (region, centre x, centre y, radius x, radius y), painted in this order
        (Region.BODY, 0.5, 1.15, 0.5, 0.3), (Region.NECK, 0.5, 0.75, 0.12, 0.15),
        (Region.HAIR, 0.5, 0.42, 0.3, 0.32), (Region.FACE, 0.5, 0.5, 0.22, 0.27),
        (Region.EYE, 0.41, 0.44, 0.05, 0.025), (Region.EYE, 0.59, 0.44, 0.05, 0.025),
        (Region.NOSE, 0.5, 0.53, 0.03, 0.06), (Region.LIP, 0.5, 0.64, 0.08, 0.03)]
    for region, cx, cy, rx, ry in parts:
        labels[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1] = region
    return labels


def _batch(cfg, model: str, batch_size: int, crop: int) -> dict:
    k = cfg.aligner.k if model == "aligner" else 1  # the blender's episodes: I_T and I_T'
    batch = {"sources": torch.rand(batch_size, k, 3, crop, crop) * 2 - 1,
             "target": torch.rand(batch_size, 3, crop, crop) * 2 - 1,
             "target_key": [f"bench__v__{i:06d}" for i in range(batch_size)]}
    if model == "blender":
        batch["target_parse"] = head_layout(crop).expand(batch_size, -1, -1)
        batch["source_parse"] = head_layout(crop, 0.03).expand(batch_size, 1, -1, -1)
    return batch


def _step_flops(trainer: GanTrainer, batch: dict) -> float:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=activities, with_flops=True) as prof:
        trainer.train_step(batch)
    return float(sum(event.flops for event in prof.key_averages()))


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--model", choices=["aligner", "blender"], default="aligner")
    args.add_argument("--steps", type=int, default=6)
    args.add_argument("--warmup", type=int, default=2)
    args.add_argument("--peak-tflops", type=float, default=989.0, help="H100 SXM bf16 dense")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    opts = args.parse_args()
    configure_tool_state()
    cfg = load_config("params.yaml", dict(parse_override(s) for s in opts.set))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    section = cfg.aligner if opts.model == "aligner" else cfg.blender
    task = (AlignerTask if opts.model == "aligner" else BlenderTask)(cfg, device)
    trainer = GanTrainer(task, section.train, DistInfo(0, 1, device))
    batch = _batch(cfg, opts.model, section.train.batch_size, cfg.crop.size)
    for _ in range(opts.warmup):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(opts.steps):
        trainer.train_step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / opts.steps
    cpu_seconds = (time.process_time() - cpu_start) / opts.steps
    frames = batch["sources"].shape[1] + 1
    what = (f"I_A {section.size} px, K={cfg.aligner.k}" if opts.model == "aligner" else
            f"I_B {section.size} px, tau {section.tau}, chunk {section.chunk_size}")
    print(f"{opts.model}: device {device}, profile {cfg.profile}, {what}, from "
          f"{cfg.crop.size} px crops, batch {section.train.batch_size}, "
          f"perceptual {task.perceptual_name}, {torch.get_num_threads()} threads")
    print(f"step {seconds * 1000:.0f} ms, {section.train.batch_size / seconds:.2f} episodes/s, "
          f"{section.train.batch_size * frames / seconds:.1f} frames/s; "
          f"CPU time {cpu_seconds * 1000:.0f} ms/step (all threads: steadier than the wall "
          "clock on a shared machine)")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        flops = _step_flops(trainer, batch)
        mfu = flops / seconds / (opts.peak_tflops * 1e12)
        print(f"{flops / 1e12:.2f} TFLOP/step, MFU {mfu:.1%}")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
