"""Subject-specific fine-tuning of the aligner (Sec. 3.1: the paper uses 32 shots, 600 steps).

It takes the K head crops of one person, cut by the one cropper (heser.face.cropper, through
:func:`heser.swap_media.source_crops`: photos, or frames of a video spread over head pose).
Training continues from the trained aligner by self-reconstruction among them: each step, a few
of the K crops are targets, and each target's sources are drawn from the others. With
``aligner.motion_input: landmarks`` the targets' landmarks, which the cropper found with them,
drive the aligner, as in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from heser.config import Config
from heser.face.align import transform_points
from heser.face.cropper import CroppedFace
from heser.face.motion import motion_features
from heser.imaging import from_uint8
from heser.io import atomic_path
from heser.tracking import Tracker, run_name
from heser.train.aligner import AlignerTask
from heser.train.checkpoint import load_checkpoint
from heser.train.distributed import DistInfo
from heser.train.gan import GanTrainer


class FinetuneError(ValueError):
    """The sources cannot be used (too few, or landmarks the aligner cannot read)."""


def episodes(crops: torch.Tensor, k: int, batch_size: int, generator: torch.Generator,
             landmarks: torch.Tensor | None = None) -> dict[str, Any]:
    """A batch of self-reconstruction episodes among the subject's crops [N, 3, H, W]; with
    ``landmarks`` [N, P, 3] (crop pixels) each target's own as ``target_landmarks``."""
    count = crops.shape[0]
    targets = torch.randint(count, (batch_size,), generator=generator).tolist()
    sources = []
    for target in targets:
        others = [i for i in range(count) if i != target] or [target]
        picks = torch.randint(len(others), (k,), generator=generator).tolist()
        sources.append(crops[[others[p] for p in picks]])
    batch = {"sources": torch.stack(sources), "target": crops[targets],
             "target_key": [f"subject__photo__{t:06d}" for t in targets]}
    if landmarks is not None:
        batch["target_landmarks"] = landmarks[targets]
    return batch


def subject_landmarks(cfg: Config, crops: list[CroppedFace]) -> torch.Tensor | None:
    """The crops' landmarks in crop pixels [N, P, 3] when the aligner's motion input reads
    them (None otherwise), each checked by reading its motion features, so that an unusable
    one stops fine-tuning before any step, naming the crop."""
    if cfg.aligner.motion_input != "landmarks":
        return None
    marks = []
    for number, crop in enumerate(crops, 1):
        points = transform_points(crop.face.landmarks, crop.matrix)
        try:
            motion_features(points, crop.image.shape[0])
        except ValueError as error:
            raise FinetuneError(f"source crop {number} of {len(crops)}: its landmarks cannot "
                                f"drive aligner.motion_input: landmarks ({error})") from error
        marks.append(points)
    return torch.from_numpy(np.stack(marks))


def subject_name(names: list[str]) -> str:
    """The fine-tuned person, for the MLflow run's name: the first source's stem, and how many
    more sources there were."""
    first = Path(names[0]).stem if names else "subject"
    return first if len(names) < 2 else f"{first} +{len(names) - 1}"


def finetune(cfg: Config, source_crops: list[CroppedFace], names: list[str], checkpoint: Path,
             steps: int, out: Path) -> dict[str, Any]:
    """Fine-tune the aligner of ``checkpoint`` on one person's head crops (the cropper's, at
    crop.size; ``names``: the files they come from, recorded in ``out``)."""
    if len(source_crops) < 2:
        raise FinetuneError("fine-tuning needs at least 2 crops of the person (2 photos, or a "
                            "video)")
    landmarks = subject_landmarks(cfg, source_crops)
    crops = torch.stack([from_uint8(crop.image) for crop in source_crops])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.aligner.train.seed)
    task = AlignerTask(cfg, device)
    train = cfg.aligner.train.model_copy(update={"steps": steps})
    trainer = GanTrainer(task, train, DistInfo(0, 1, device))
    base = load_checkpoint(checkpoint)
    task.generator.load_state_dict(base["generator"])
    task.discriminator.load_state_dict(base["discriminator"])
    generator = torch.Generator().manual_seed(train.seed)
    tracker = Tracker("heser-finetune", run_name("finetune", subject_name(names)),
                      {"steps": steps, "sources": names, "crops": len(source_crops),
                       "base_checkpoint": str(checkpoint), "aligner": cfg.aligner.model_dump(
                           mode="json")}, enabled=True)
    losses: dict[str, float] = {}
    for step in tqdm(range(1, steps + 1), desc="finetune", dynamic_ncols=True):
        batch = episodes(crops, cfg.aligner.k, train.batch_size, generator, landmarks)
        losses = trainer.train_step(batch).losses
        if step % train.log_every == 0 or step == steps:
            tracker.metrics({f"train/{k}": v for k, v in losses.items()}, step)
    tracker.end()
    with atomic_path(out) as tmp:
        torch.save({"generator": task.generator.state_dict(),
                    "base_checkpoint": str(checkpoint), "base_step": int(base["step"]),
                    "steps": steps, "sources": names, "crops": len(source_crops)}, tmp)
    return {"steps": steps, "sources": len(names), "crops": len(source_crops),
            "final_losses": losses}
