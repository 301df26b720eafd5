"""`heser swap` throughput on a real clip: frames/s end to end (decode, detect, parse, aligner,
blender, paste, encode) and peak memory; then, apart from the timing, the swapped clip's
stability next to the target clip's own (heser.video_stability: flicker, identity spread,
landmark jitter).

    python bench/swap.py [--frames 50] [--set KEY=VALUE ...]     # the CPU profile
    python bench/swap.py --set profile=paper                     # 512 px (models trained at 512)
    python bench/swap.py --model-only --set profile=paper --json out.json    # a GPU machine
    python bench/swap.py --dry-run [--model-only]                # tiny sizes, CPU, seconds

It uses the trained models in paths.models (run `dvc repro train_blender` first) or, with
--untrained, freshly initialised networks of the configured size: the cost is the same, which
is what lets the 512 profile be measured without a 512 training run.

``--model-only`` times the networks of a swap alone, on the GPU when there is one, with no face
detector, parser, video decoding or encoding (which need MediaPipe's runtime and PyAV): the
sources' code once (E_id, E_por; eq. 1), then per frame the aligner (I_A) and the blender (I_B)
of heser.swap.Swapper, on random crops and the synthetic head-and-shoulders label layout of
bench/train_step.py for I_T and I_A, with freshly initialised networks.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from train_step import DRY_RUN, head_layout  # bench/ is the script's directory

from heser.config import Config, load_config, parse_override
from heser.env import configure_tool_state
from heser.imaging import resize
from heser.nets.aligner import Head2HeadAligner
from heser.nets.blender import Head2SceneBlender
from heser.nets.identity import make_identity_encoder
from heser.swap import Swapper

CLIP = Path("../shared/data/sample/videos/tpsmm_driving_asian_man.mp4")
SOURCES = [Path("../shared/data/sample/images/st_woman_B_happy1.png")]


def _cut(clip: Path, frames: int, out: Path) -> Path:
    from heser.data.video_io import VideoWriter, probe_video, read_frames

    meta = probe_video(clip)
    with VideoWriter(out, meta.rate, meta.width, meta.height, audio_from=clip) as writer:
        for index, rgb in enumerate(read_frames(clip)):
            if index == frames:
                break
            writer.write(rgb)
    return out


def _untrained(cfg: Config, models: Path) -> None:
    from heser.train.checkpoint import save_checkpoint

    identity_dim = make_identity_encoder(cfg.aligner.identity, cfg.root).dim
    save_checkpoint(models / "aligner.pt", {
        "generator": Head2HeadAligner(cfg.aligner, identity_dim, cfg.root).state_dict()})
    save_checkpoint(models / "blender.pt",
                    {"generator": Head2SceneBlender(cfg.blender).state_dict()})


def end_to_end(cfg_overrides: dict, frames: int, untrained: bool) -> dict:
    """`heser swap` on a cut of CLIP, then the stability of the result."""
    from heser.data.video_io import probe_video
    from heser.face.backends import make_face_backend
    from heser.face.cropper import Cropper
    from heser.swap_media import run_swap, source_crops
    from heser.video_stability import stability_summary, video_stability

    with tempfile.TemporaryDirectory() as tmp:
        overrides = dict(cfg_overrides)
        if untrained:
            overrides["paths.models"] = tmp
        cfg = load_config("params.yaml", overrides)
        if untrained:
            _untrained(cfg, Path(tmp))
        clip = _cut(CLIP, frames, Path(tmp) / "clip.mp4")
        report = run_swap(cfg, SOURCES, clip, Path(tmp) / "swap.mp4")
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        cropper = Cropper(make_face_backend(cfg, cfg.path(cfg.paths.weights)), cfg.crop)
        stability = video_stability(cfg, clip, Path(tmp) / "swap.mp4",
                                    [c.image for c in source_crops(cfg, cropper, SOURCES, [])])
    meta = probe_video(CLIP)
    return {"mode": "end-to-end", **_sizes(cfg), "target": f"{meta.width}x{meta.height}",
            "frames": report.frames, "swapped": report.swapped, "seconds": report.seconds,
            "frames_per_s": report.frames / report.seconds, "peak_memory_gib": peak_gib,
            "peak_memory_kind": "peak RSS", "stability": stability,
            "stability_summary": stability_summary(stability)}


class ModelSwapper(Swapper):
    """:class:`Swapper`'s networks and its model steps (source_code, animate, blend), freshly
    initialised, without its face backend and parser."""

    def __init__(self, cfg: Config, device: torch.device):  # not super(): no face tools
        self.cfg, self.device = cfg, device
        self.identity = make_identity_encoder(cfg.aligner.identity, cfg.root).to(device)
        self.aligner = Head2HeadAligner(cfg.aligner, self.identity.dim, cfg.root).to(device)
        self.blender = Head2SceneBlender(cfg.blender).to(device)
        self.aligner.eval()
        self.blender.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_only(cfg: Config, frames: int, warmup: int) -> dict:
    """Frames/s of the aligner and the blender per target crop, after the sources' code."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    swapper = ModelSwapper(cfg, device)
    crop = cfg.crop.size
    gen = torch.Generator().manual_seed(0)
    sources = [torch.randint(0, 256, (crop, crop, 3), dtype=torch.uint8, generator=gen).numpy()
               for _ in range(cfg.aligner.k)]
    targets = [torch.rand(1, 3, crop, crop, generator=gen).to(device) * 2 - 1
               for _ in range(4)]  # rotated through, so no frame is a repeat of the last
    labels_t, labels_a = head_layout(crop).numpy(), head_layout(crop, 0.03).numpy()

    def frame(index: int) -> torch.Tensor:
        target = targets[index % len(targets)]
        animated = resize(swapper.animate(code, target), crop)  # I_A at the crop size
        return swapper.blend(animated, target, labels_a, labels_t)["image"]

    start = time.perf_counter()
    code = swapper.source_code(sources)
    _sync(device)
    code_seconds = time.perf_counter() - start
    for index in range(warmup):
        frame(index)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for index in range(frames):
        frame(index)
    _sync(device)
    seconds = time.perf_counter() - start
    on_gpu = device.type == "cuda"
    return {"mode": "model-only", **_sizes(cfg),
            "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({platform.machine()})",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "frames": frames, "warmup": warmup, "seconds": seconds,
            "frames_per_s": frames / seconds, "ms_per_frame": seconds / frames * 1000,
            "source_code_ms": code_seconds * 1000,
            "peak_memory_gib": (torch.cuda.max_memory_allocated() if on_gpu else
                                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            / 2**30,
            "peak_memory_kind": "cuda max_memory_allocated" if on_gpu else "peak RSS"}


def _sizes(cfg: Config) -> dict:
    return {"profile": cfg.profile, "crop": cfg.crop.size, "aligner_size": cfg.aligner.size,
            "blender_size": cfg.blender.size, "k": cfg.aligner.k}


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--frames", type=int, default=50)
    args.add_argument("--warmup", type=int, default=2, help="--model-only: untimed frames")
    args.add_argument("--untrained", action="store_true")
    args.add_argument("--model-only", action="store_true",
                      help="time the aligner and blender alone (no MediaPipe, no video I/O)")
    args.add_argument("--dry-run", action="store_true", help="tiny sizes, 2 frames")
    args.add_argument("--json", type=Path, help="write the figures here")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    opts = args.parse_args()
    configure_tool_state()
    overrides = {**(DRY_RUN if opts.dry_run else {}),
                 **dict(parse_override(s) for s in opts.set)}
    frames = 2 if opts.dry_run else opts.frames
    if opts.model_only:
        result = model_only(load_config("params.yaml", overrides), frames,
                            1 if opts.dry_run else opts.warmup)
        print(f"swap, model only: {result['device']}, profile {result['profile']}, crop "
              f"{result['crop']} px, I_A {result['aligner_size']} px, I_B "
              f"{result['blender_size']} px, K={result['k']}: {result['frames_per_s']:.2f} "
              f"frames/s ({result['ms_per_frame']:.1f} ms/frame; sources' code "
              f"{result['source_code_ms']:.0f} ms), {result['peak_memory_kind']} "
              f"{result['peak_memory_gib']:.2f} GiB")
    else:
        result = end_to_end(overrides, frames, opts.untrained or opts.dry_run)
        print(f"profile {result['profile']}, crop {result['crop']} px, I_A "
              f"{result['aligner_size']} px, I_B {result['blender_size']} px, target "
              f"{result['target']}, {result['frames']} frames, device "
              f"{'cuda' if torch.cuda.is_available() else 'cpu'}, "
              f"{torch.get_num_threads()} threads")
        print(f"{result['frames_per_s']:.2f} frames/s end to end ({result['seconds']:.1f} s, "
              f"model loading included), {result['swapped']} frames swapped")
        print(f"peak RSS {result['peak_memory_gib']:.2f} GiB")
        print(result["stability_summary"])
    if opts.json:
        opts.json.parent.mkdir(parents=True, exist_ok=True)
        opts.json.write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
