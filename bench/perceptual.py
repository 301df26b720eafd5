"""Cost of the perceptual-loss backbones and of the LPIPS metric.

    python bench/perceptual.py [--size 128] [--batch 8] [--backbones dlib vgg16] [--set K=V ...]

Perceptual loss: one forward of the generated and the target batch, feature L1, backward to the
generated batch's pixels (what a training step adds for the loss), per backbone choice of
params.yaml's aligner.loss.perceptual_backbone. LPIPS: one ``heser.metrics.lpips`` call on a
pair of uint8 images at each --lpips-sizes side, as evaluation code makes it. Random pixels:
the cost does not depend on them. Wall and process CPU time, medians over --repeats after one
warm-up; on a loaded machine the CPU time of one thread (--threads 1) is the steadier figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from heser import metrics
from heser.config import load_config, parse_override
from heser.env import configure_tool_state
from heser.losses import feature_l1
from heser.nets.identity import make_identity_encoder
from heser.nets.perceptual import make_perceptual_net


def timed(step: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``step`` after one warm-up call."""
    step()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def perceptual_step(net: torch.nn.Module, size: int, batch: int) -> Callable[[], None]:
    fake = torch.rand(batch, 3, size, size) * 2 - 1
    real = torch.rand(batch, 3, size, size) * 2 - 1

    def step() -> None:
        pixels = fake.clone().requires_grad_(True)
        feature_l1(net(pixels), net(real)).backward()

    return step


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--size", type=int, default=128)
    args.add_argument("--batch", type=int, default=8)
    args.add_argument("--repeats", type=int, default=5)
    args.add_argument("--backbones", nargs="+", default=["dlib", "vgg16"])
    args.add_argument("--lpips-sizes", nargs="*", type=int, default=[128, 256])
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    opts = args.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    configure_tool_state()
    cfg = load_config("params.yaml", dict(parse_override(s) for s in opts.set))
    print(f"{torch.get_num_threads()} torch threads")
    identity = make_identity_encoder(cfg.aligner.identity, cfg.root)
    for backbone in opts.backbones:
        choice = cfg.aligner.loss.model_copy(update={"perceptual_backbone": backbone})
        net, name = make_perceptual_net(choice, identity, cfg.root)
        wall, cpu = timed(perceptual_step(net, opts.size, opts.batch), opts.repeats)
        print(f"perceptual {name}: {opts.size} px batch {opts.batch} forward+backward "
              f"{wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")
    weights_dir = cfg.path(cfg.paths.weights)
    rng = np.random.default_rng(0)
    for size in opts.lpips_sizes:
        a, b = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(2))
        wall, cpu = timed(lambda a=a, b=b: metrics.lpips(a, b, weights_dir), opts.repeats)
        print(f"metrics.lpips: {size} px pair {wall * 1000:.1f} ms wall, {cpu * 1000:.1f} ms CPU")


if __name__ == "__main__":
    main()
