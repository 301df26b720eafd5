"""Colour reference creation (eq. 4-7): region-restricted chunked warp vs the dense masked one.

    python bench/correspondence.py [--crops 256 512] [--batch 1] [--repeats 3] [--json PATH]
    python bench/correspondence.py --save-inputs crops.npz     # the two crops and label maps
    python bench/correspondence.py --inputs crops.npz --crops 512   # no MediaPipe needed
    python bench/correspondence.py --dry-run                   # 64 px, one repeat, seconds

Feature maps at 1/4 of the crop (64x64 and 128x128), C=64 random channels, tau 0.01, the
region layout of two real parsed crops (A = dt_woman_D, T = dt_man_E flipped, as F(I_T)) with
their Fig. 4 inpainting rings, label maps upsampled to the crop size. Each case runs in its own
subprocess: peak memory is the rise of the peak RSS (VmHWM, reset through /proc/self/clear_refs
once the inputs are loaded) over the RSS at that point, on a GPU torch.cuda.max_memory_allocated;
time is the median of ``--repeats`` runs after a first one. "out diff" is the largest absolute
difference of the two outputs, "grad diff" that of the gradients w.r.t. f_A and f_T (of the
sum of squared outputs) over the largest gradient. ``--save-inputs`` writes the two crops and
their label maps (MediaPipe's, as the table uses) to an .npz that ``--inputs`` reads back, so
a machine without MediaPipe's runtime (a GPU machine) measures the same layout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from heser import assets
from heser.config import Config, load_config
from heser.data.masks import fig4_masks
from heser.data.media import read_image
from heser.env import configure_tool_state
from heser.face.mediapipe import MediaPipeFace
from heser.face.parse_mediapipe import MediaPipeParser
from heser.nets.correspondence import region_maps, warp_with

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the dense reference lives with the tests that check against it
from tests.nets.correspondence_reference import dense_warp_with  # noqa: E402

CROPS = ("images/dt_woman_D_crop256.png", "images/dt_man_E_crop256.png")
CHANNELS = 64
TAU = 0.01
IMPLS = {"region": warp_with, "dense": dense_warp_with}


# --------------------------------------------------------------------------------------------
# Inputs (parent process)


def _real_crops(cfg: Config) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The two real crops and their MediaPipe label maps."""
    mirrors = assets.mirror_dirs(cfg.assets.mirrors, cfg.root)
    weights = cfg.path(cfg.paths.weights)
    rows, _ = assets.read_manifest(cfg.path(cfg.assets.weights_manifest))
    assets.fetch_all(rows, weights, mirrors, progress=False)
    data_rows = assets.read_manifest(cfg.path(cfg.assets.data_manifest))[0]
    paths = {row.file: assets.fetch(row, cfg.path(cfg.paths.raw), mirrors, progress=False)
             for row in data_rows if row.file in CROPS}
    backend, parser = MediaPipeFace(weights), MediaPipeParser(weights)
    rgbs, labels = [], []
    for name in CROPS:
        rgb = read_image(paths[name], cfg.crop.min_image_side)[0]
        (face,) = backend(rgb)
        rgbs.append(rgb)
        labels.append(parser(rgb, face.landmarks, face.scheme))
    return rgbs, labels


def save_inputs(path: Path, rgbs: list[np.ndarray], labels: list[np.ndarray]) -> None:
    np.savez_compressed(path, rgb_a=rgbs[0], rgb_t=rgbs[1], labels_a=labels[0],
                        labels_t=labels[1])


def load_inputs(path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The crops and label maps of :func:`save_inputs` (plain arrays: no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return [data["rgb_a"], data["rgb_t"]], [data["labels_a"], data["labels_t"]]
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"{path}: not a --save-inputs file of bench/correspondence.py "
                         f"({exc})") from None


def _inputs(rgbs: list[np.ndarray], labels: list[np.ndarray], crop: int, batch: int,
            dilation: float) -> dict[str, torch.Tensor]:
    """f_A, f_T, region maps and I_T for one crop size (label maps upsampled to it)."""
    label_a, label_t = (torch.from_numpy(m)[None, None].float() for m in labels)
    label_t = label_t.flip(-1)  # F(I_T)
    label_a, label_t = (F.interpolate(m, size=(crop, crop), mode="nearest")[:, 0].long()
                        for m in (label_a, label_t))
    masks = fig4_masks(label_a, label_t, dilation)
    size = (crop // 4, crop // 4)
    image_t = torch.from_numpy(rgbs[1]).permute(2, 0, 1)[None].float().flip(-1) / 255
    gen = torch.Generator().manual_seed(0)
    return {
        "f_a": torch.randn(batch, CHANNELS, *size, generator=gen),
        "f_t": torch.randn(batch, CHANNELS, *size, generator=gen),
        "regions_a": region_maps(label_a, masks.inpaint_animated[:, 0], size).expand(batch, -1, -1),
        "regions_t": region_maps(label_t, masks.inpaint_target[:, 0], size).expand(batch, -1, -1),
        "colors_t": F.interpolate(image_t, size=(crop, crop), mode="bilinear").expand(batch, -1,
                                                                                     -1, -1),
    }


# --------------------------------------------------------------------------------------------
# One case (child process)


def _run_once(impl: str, inputs: dict[str, torch.Tensor], backward: bool,
              device: torch.device) -> list[torch.Tensor]:
    f_a = inputs["f_a"].to(device).requires_grad_(backward)
    f_t = inputs["f_t"].to(device).requires_grad_(backward)
    out, _ = IMPLS[impl](f_a, f_t, inputs["regions_a"].to(device),
                         inputs["regions_t"].to(device), inputs["colors_t"].to(device), TAU)
    if not backward:
        return [out.detach()]
    return [out.detach(), *torch.autograd.grad(out.square().sum(), (f_a, f_t))]


def _subsampled(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every 4th feature cell: the same code paths on a sixteenth of the positions."""
    return {name: value if name == "colors_t" else value[..., ::4, ::4]
            for name, value in inputs.items()}


def _rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def child(spec: dict) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    inputs = torch.load(spec["inputs"])
    backward = spec["pass"] == "fwd+bwd"
    # the first call pages in kernels' code and sets up thread pools: not the case's memory
    _run_once(spec["impl"], _subsampled(inputs), backward, device)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    baseline = _rss_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = _run_once(spec["impl"], inputs, backward, device)
    _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (_rss_kib("VmHWM") - baseline) / 2**10
    torch.save([r.cpu() for r in results], spec["outputs"])
    seconds = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        _run_once(spec["impl"], inputs, backward, device)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"ms": statistics.median(seconds) * 1000, "peak_mib": peak}))


def _case(spec: dict) -> dict:
    # a fixed mmap threshold: glibc's default one grows after the first large free, and then
    # freed tensors stay in the heap and in the RSS, which would count them twice
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------


def _diffs(got: list[torch.Tensor], want: list[torch.Tensor]) -> tuple[float, float | None]:
    """(output max abs diff, gradients' max abs diff / max abs gradient, None without grads)."""
    out = float((got[0] - want[0]).abs().max())
    if len(got) == 1:
        return out, None
    grads = max(float((g - w).abs().max() / w.abs().max()) for g, w in zip(got[1:], want[1:]))
    return out, grads


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--crops", type=int, nargs="+", default=[256, 512])
    args.add_argument("--batch", type=int, default=1)
    args.add_argument("--repeats", type=int, default=3)
    args.add_argument("--inputs", type=Path, help="crops and label maps from --save-inputs")
    args.add_argument("--save-inputs", type=Path, help="write them here and exit")
    args.add_argument("--dry-run", action="store_true", help="64 px crops, one repeat")
    args.add_argument("--json", type=Path, help="write the table's figures here")
    args.add_argument("--child", help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.child:
        child(json.loads(opts.child))
        return
    configure_tool_state()
    cfg = load_config(ROOT / "params.yaml")
    rgbs, labels = load_inputs(opts.inputs) if opts.inputs else _real_crops(cfg)
    if opts.save_inputs:
        save_inputs(opts.save_inputs, rgbs, labels)
        return
    crops, repeats = ([64], 1) if opts.dry_run else (opts.crops, opts.repeats)
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"cpu ({platform.machine()})")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {opts.batch}, C={CHANNELS}, tau={TAU}, chunk 1024 rows\n")
    print("| crop | features | pass | region ms | dense ms | region MiB | dense MiB "
          "| memory ratio | out diff | grad diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for crop in crops:
            path = Path(tmp) / f"inputs{crop}.pt"
            torch.save(_inputs(rgbs, labels, crop, opts.batch, cfg.masks.dilation), path)
            for pass_ in ("fwd", "fwd+bwd"):
                row, outs = {}, {}
                for impl in IMPLS:
                    outs[impl] = Path(tmp) / f"{impl}{crop}{pass_}.pt"
                    row[impl] = _case({"inputs": str(path), "outputs": str(outs[impl]),
                                       "impl": impl, "pass": pass_, "repeats": repeats})
                out_diff, grad_diff = _diffs(*(torch.load(outs[impl]) for impl in IMPLS))
                region, dense = row["region"], row["dense"]
                ratio = dense["peak_mib"] / max(region["peak_mib"], 1e-3)
                grad = "-" if grad_diff is None else f"{grad_diff:.1e}"
                print(f"| {crop} | {crop // 4}x{crop // 4} | {pass_} | {region['ms']:.0f} "
                      f"| {dense['ms']:.0f} | {region['peak_mib']:.0f} "
                      f"| {dense['peak_mib']:.0f} | {ratio:.1f}x "
                      f"| {out_diff:.1e} | {grad} |", flush=True)
                rows.append({"crop": crop, "features": crop // 4, "pass": pass_,
                             "region_ms": region["ms"], "dense_ms": dense["ms"],
                             "region_peak_mib": region["peak_mib"],
                             "dense_peak_mib": dense["peak_mib"], "memory_ratio": ratio,
                             "out_diff": out_diff, "grad_diff": grad_diff})
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(
            {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "batch": opts.batch, "channels": CHANNELS, "tau": TAU, "repeats": repeats,
             "peak_memory_kind": ("cuda max_memory_allocated" if torch.cuda.is_available()
                                  else "rise of peak RSS"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
