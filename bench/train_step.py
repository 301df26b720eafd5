"""Training throughput: step time, episodes/s, peak memory and MFU of one GAN step (D phase +
G phase) of the aligner or the blender.

    python bench/train_step.py [--model aligner|blender] [--steps 6] [--set KEY=VALUE ...]
    python bench/train_step.py --set profile=paper --json out.json    # 512 px on a GPU
    python bench/train_step.py --dry-run                              # tiny sizes, CPU, seconds

Batches are random tensors of the configured shapes (the sampler is measured elsewhere), so the
figure is the model's cost alone. The blender's label maps are a synthetic head-and-shoulders
layout (:func:`head_layout`): the cost of its colour references depends on the region sizes,
which random labels would not have.

The trainer (heser.train.gan) runs bf16 autocast and channels_last on a GPU and neither on a
CPU; ``--bf16``/``--no-bf16`` and ``--channels-last``/``--no-channels-last`` override that for
the measurement, ``--compile`` wraps the generator and the discriminator in torch.compile.
On a GPU and in a dry run, the FLOPs of a step are counted once, on an eager step before the
timed ones, with torch.utils.flop_counter's formulas (matrix products and convolutions, forward
and backward); MFU is FLOP/s over ``--peak-tflops`` (the device's dense bf16 rate), GPU only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from heser.config import load_config, parse_override
from heser.env import configure_tool_state
from heser.face.labels import Region
from heser.train.aligner import AlignerTask
from heser.train.blender import BlenderTask
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer

# --dry-run: the configured profile shrunk to seconds on a CPU (applied before --set)
DRY_RUN = {"crop.size": 64, "aligner.size": 64, "aligner.k": 2, "aligner.pose.input_size": 64,
           "aligner.expression.input_size": 48, "blender.size": 64,
           "aligner.train.batch_size": 2, "blender.train.batch_size": 2}


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


def configure(trainer: GanTrainer, bf16: bool | None,
              channels_last: bool | None) -> tuple[bool, bool]:
    """Apply the flags over the trainer's defaults; returns (bf16, channels_last) in effect."""
    device = trainer.device
    on_gpu = device.type == "cuda"
    bf16 = on_gpu if bf16 is None else bf16
    channels_last = on_gpu if channels_last is None else channels_last
    trainer.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                        else contextlib.nullcontext())
    layout = torch.channels_last if channels_last else torch.contiguous_format
    trainer.task.generator.to(memory_format=layout)
    trainer.task.discriminator.to(memory_format=layout)
    return bf16, channels_last


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of the ops torch.utils.flop_counter knows (matrix products,
    convolutions, attention; forward and backward). FlopCounterMode itself also tracks modules,
    which fails on a no_grad forward through parameters that require grad."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **kwargs, out_val=out)
        return out


def step_flops(trainer: GanTrainer, batch: dict) -> float:
    """FLOPs of one eager training step (forward and backward, both phases)."""
    with FlopCount() as counter:
        trainer.train_step(batch)
    return float(counter.flops)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(cfg, model: str, steps: int, warmup: int, bf16: bool | None,
            channels_last: bool | None, compile_nets: bool, peak_tflops: float,
            count_flops: bool) -> dict:
    """The figures of ``steps`` timed training steps after ``warmup`` untimed ones; the FLOPs
    per step (one more, eager step) if ``count_flops``."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    section = cfg.aligner if model == "aligner" else cfg.blender
    task = (AlignerTask if model == "aligner" else BlenderTask)(cfg, device)
    trainer = GanTrainer(task, section.train, DistInfo(0, 1, device))
    bf16, channels_last = configure(trainer, bf16, channels_last)
    batch = _batch(cfg, model, section.train.batch_size, cfg.crop.size)
    # eager: the counter does not see inside compiled code
    flops = step_flops(trainer, batch) if count_flops else None
    if compile_nets:  # the networks the steps run; the task keeps the bare ones
        trainer.generator = torch.compile(trainer.generator)
        trainer.discriminator = torch.compile(trainer.discriminator)
    warmup_start = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step(batch)
    _sync(device)
    warmup_seconds = time.perf_counter() - warmup_start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.train_step(batch)
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    cpu_seconds = (time.process_time() - cpu_start) / steps
    frames = batch["sources"].shape[1] + 1
    on_gpu = device.type == "cuda"
    return {
        "model": model, "profile": cfg.profile, "size": section.size, "crop": cfg.crop.size,
        "k": cfg.aligner.k if model == "aligner" else None,
        "batch": section.train.batch_size, "perceptual": task.perceptual_name,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({platform.machine()})",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "bf16": bf16, "channels_last": channels_last, "compile": compile_nets,
        "steps": steps, "warmup": warmup, "warmup_s": warmup_seconds,
        "step_ms": seconds * 1000, "cpu_ms_per_step": cpu_seconds * 1000,
        "episodes_per_s": section.train.batch_size / seconds,
        "frames_per_s": section.train.batch_size * frames / seconds,
        # on a GPU the allocator's peak over the timed steps; on a CPU the process's peak RSS
        "peak_memory_gib": (torch.cuda.max_memory_allocated() if on_gpu else
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30,
        "peak_memory_kind": "cuda max_memory_allocated" if on_gpu else "peak RSS",
        "tflop_per_step": None if flops is None else flops / 1e12,
        "mfu": flops / seconds / (peak_tflops * 1e12) if on_gpu and flops else None,
        "peak_tflops": peak_tflops,
    }


def summary(r: dict) -> str:
    what = (f"I_A {r['size']} px, K={r['k']}" if r["model"] == "aligner" else
            f"I_B {r['size']} px")
    flops = "" if r["tflop_per_step"] is None else f"; {r['tflop_per_step']:.3f} TFLOP/step"
    mfu = "" if r["mfu"] is None else f", MFU {r['mfu']:.1%}"
    return (f"{r['model']}: {r['device']}, profile {r['profile']}, {what}, from {r['crop']} px "
            f"crops, batch {r['batch']}, perceptual {r['perceptual']}, bf16 {r['bf16']}, "
            f"channels_last {r['channels_last']}, compile {r['compile']}, {r['threads']} "
            f"threads\n"
            # bench/kshot_loader.py reads "step N ms, X episodes/s" off this line
            f"step {r['step_ms']:.0f} ms, {r['episodes_per_s']:.2f} episodes/s, "
            f"{r['frames_per_s']:.1f} frames/s; CPU time {r['cpu_ms_per_step']:.0f} ms/step (all "
            f"threads){flops}{mfu}; {r['peak_memory_kind']} "
            f"{r['peak_memory_gib']:.2f} GiB; warm-up {r['warmup_s']:.1f} s")


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--model", choices=["aligner", "blender"], default="aligner")
    args.add_argument("--steps", type=int, default=6)
    args.add_argument("--warmup", type=int, default=2)
    args.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                      help="bf16 autocast (default: the trainer's, on a GPU only)")
    args.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                      help="channels_last networks (default: the trainer's, on a GPU only)")
    args.add_argument("--compile", action="store_true",
                      help="torch.compile the generator and the discriminator")
    args.add_argument("--peak-tflops", type=float, default=989.0,
                      help="dense bf16 TFLOP/s of the device, for MFU (H100/H200 SXM: 989)")
    args.add_argument("--dry-run", action="store_true",
                      help="tiny sizes, one warm-up and one timed step: checks the code runs")
    args.add_argument("--json", type=Path, help="write the figures here")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    opts = args.parse_args()
    configure_tool_state()
    overrides = {**(DRY_RUN if opts.dry_run else {}),
                 **dict(parse_override(s) for s in opts.set)}
    cfg = load_config("params.yaml", overrides)
    steps, warmup = (1, 1) if opts.dry_run else (opts.steps, opts.warmup)
    on_gpu = torch.cuda.is_available()
    result = measure(cfg, opts.model, steps, warmup, opts.bf16, opts.channels_last,
                     opts.compile, opts.peak_tflops, count_flops=on_gpu or opts.dry_run)
    print(summary(result), flush=True)
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
