"""Subject-specific fine-tuning of the aligner (Sec. 3.1: the paper uses 32 shots, 600 steps).

The K photos of one person are cropped exactly as the crop stage does. Training then continues
from the trained aligner by self-reconstruction among them: each step, a few of the K photos are
targets, and each target's sources are drawn from the others.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from heser.config import Config
from heser.data.shards import decode_sample, read_tar
from heser.face.backends import make_face_backend
from heser.imaging import from_uint8
from heser.io import atomic_path
from heser.preprocess.crop import crop_item
from heser.preprocess.items import MediaItem
from heser.train.aligner import AlignerTask
from heser.train.checkpoint import load_checkpoint
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer


class FinetuneError(ValueError):
    """The source photos cannot be used (no face, too few)."""


def crop_sources(cfg: Config, images: list[Path]) -> torch.Tensor:
    """[K, 3, S, S] in [-1, 1]: each photo's head crop, as the crop stage makes it."""
    backend = make_face_backend(cfg, cfg.path(cfg.paths.weights))
    crops = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, path in enumerate(images):
            tar = Path(tmp) / f"{index}.tar"
            result = crop_item(MediaItem(path.name, path, "subject", "image"), backend, cfg, tar)
            if not result.samples:
                reasons = "; ".join(r.reason for r in result.rejects) or "no face"
                raise FinetuneError(f"{path}: {reasons}")
            img = decode_sample(next(read_tar(tar)))["img"]
            crops.append(from_uint8(img))
    return torch.stack(crops)


def episodes(crops: torch.Tensor, k: int, batch_size: int,
             generator: torch.Generator) -> dict[str, Any]:
    """A batch of self-reconstruction episodes among the subject's crops."""
    count = crops.shape[0]
    targets = torch.randint(count, (batch_size,), generator=generator).tolist()
    sources = []
    for target in targets:
        others = [i for i in range(count) if i != target] or [target]
        picks = torch.randint(len(others), (k,), generator=generator).tolist()
        sources.append(crops[[others[p] for p in picks]])
    return {"sources": torch.stack(sources), "target": crops[targets],
            "target_key": [f"subject__photo__{t:06d}" for t in targets]}


def finetune(cfg: Config, images: list[Path], checkpoint: Path, steps: int,
             out: Path) -> dict[str, Any]:
    if len(images) < 2:
        raise FinetuneError("fine-tuning needs at least 2 photos of the person")
    crops = crop_sources(cfg, images)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.aligner.train.seed)
    task = AlignerTask(cfg, device)
    train = cfg.aligner.train.model_copy(update={"steps": steps})
    trainer = GanTrainer(task, train, DistInfo(0, 1, device))
    base = load_checkpoint(checkpoint)
    trainer.models["generator"].load_state_dict(base["generator"])
    trainer.models["discriminator"].load_state_dict(base["discriminator"])
    generator = torch.Generator().manual_seed(train.seed)
    losses: dict[str, float] = {}
    for _ in tqdm(range(steps), desc="finetune", dynamic_ncols=True):
        batch = episodes(crops, cfg.aligner.k, train.batch_size, generator)
        losses = trainer.train_step(batch).losses
    with atomic_path(out) as tmp:
        torch.save({"generator": trainer.models["generator"].state_dict(),
                    "base_checkpoint": str(checkpoint), "base_step": int(base["step"]),
                    "steps": steps, "sources": [str(p) for p in images]}, tmp)
    return {"steps": steps, "sources": len(images), "final_losses": losses}
