"""`heser swap` throughput on a real clip: frames/s end to end (decode, detect, parse, aligner,
blender, paste, encode) and peak memory; then, apart from the timing, the swapped clip's
stability next to the target clip's own (heser.video_stability: flicker, identity spread,
landmark jitter).

    python bench/swap.py [--frames 50] [--set KEY=VALUE ...]     # the CPU profile
    python bench/swap.py --set profile=paper                     # 512 px (models trained at 512)

It uses the trained models in paths.models (run `dvc repro train_blender` first) or, with
--untrained, freshly initialised networks of the configured size: the cost is the same, which
is what lets the 512 profile be measured without a 512 training run.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
from pathlib import Path

import torch

from heser.config import load_config, parse_override
from heser.data.video_io import VideoWriter, probe_video, read_frames
from heser.env import configure_tool_state
from heser.face.backends import make_face_backend
from heser.face.cropper import Cropper
from heser.swap_media import run_swap, source_crops
from heser.video_stability import stability_summary, video_stability

CLIP = Path("../shared/data/sample/videos/tpsmm_driving_asian_man.mp4")
SOURCES = [Path("../shared/data/sample/images/st_woman_B_happy1.png")]


def _cut(clip: Path, frames: int, out: Path) -> Path:
    meta = probe_video(clip)
    with VideoWriter(out, meta.rate, meta.width, meta.height, audio_from=clip) as writer:
        for index, rgb in enumerate(read_frames(clip)):
            if index == frames:
                break
            writer.write(rgb)
    return out


def _untrained(cfg, models: Path) -> None:
    from heser.nets.aligner import Head2HeadAligner
    from heser.nets.blender import Head2SceneBlender
    from heser.nets.identity import make_identity_encoder
    from heser.train.checkpoint import save_checkpoint

    identity_dim = make_identity_encoder(cfg.aligner.identity, cfg.root).dim
    save_checkpoint(models / "aligner.pt", {
        "generator": Head2HeadAligner(cfg.aligner, identity_dim, cfg.root).state_dict()})
    save_checkpoint(models / "blender.pt",
                    {"generator": Head2SceneBlender(cfg.blender).state_dict()})


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--frames", type=int, default=50)
    args.add_argument("--untrained", action="store_true")
    args.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    opts = args.parse_args()
    configure_tool_state()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = dict(parse_override(s) for s in opts.set)
        if opts.untrained:
            overrides["paths.models"] = tmp
        cfg = load_config("params.yaml", overrides)
        if opts.untrained:
            _untrained(cfg, Path(tmp))
        clip = _cut(CLIP, opts.frames, Path(tmp) / "clip.mp4")
        report = run_swap(cfg, SOURCES, clip, Path(tmp) / "swap.mp4")
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        cropper = Cropper(make_face_backend(cfg, cfg.path(cfg.paths.weights)), cfg.crop)
        stability = video_stability(cfg, clip, Path(tmp) / "swap.mp4",
                                    source_crops(cfg, cropper, SOURCES, []))
    meta = probe_video(CLIP)
    print(f"profile {cfg.profile}, crop {cfg.crop.size} px, I_A {cfg.aligner.size} px, "
          f"I_B {cfg.blender.size} px, target {meta.width}x{meta.height}, {report.frames} frames, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{report.frames / report.seconds:.2f} frames/s end to end ({report.seconds:.1f} s, "
          f"model loading included), {report.swapped} frames swapped")
    print(f"peak RSS {peak_gib:.2f} GiB")
    print(stability_summary(stability))


if __name__ == "__main__":
    main()
