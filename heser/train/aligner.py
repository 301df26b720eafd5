"""The Head2Head Aligner as a ``GanTask``: self-reconstruction from K+1 frames of one video
(Sec. 3.1): K sources, and the target I_T whose pose and expression I_A must take.

Beyond the paper, and off by default (``aligner.loss.cross_identity``/``cross_motion``): each
episode's sources are also driven by the target of an episode of another person in the same
batch, I_A^x, which must keep the sources' identity and take the driver's motion. They were
added against identity leaking through E_pose/E_exp; that leak came from the sources' codes not
reaching the generator (fixed by ``aligner.code_norm`` and ``encoder_spectral_norm``), and since
then they change nothing measurable (docs/BENCHMARKS.md, the learnability check).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from heser.config import Config
from heser.data.augment import (
    draw_similarity,
    pose_augment,
    similarity_points,
    warp_similarity,
)
from heser.face.motion import motion_features
from heser.imaging import resize, tile_grid, to_unit
from heser.losses import aligner_generator_losses, cross_reenactment_losses
from heser.metrics import LPIPS_WEIGHTS, lpips_network
from heser.nets.aligner import Head2HeadAligner, driver_inputs
from heser.nets.discriminator import Discriminator
from heser.nets.identity import cosine_distance, make_identity_encoder
from heser.nets.perceptual import make_perceptual_net
from heser.train.gan import episode_generators
from heser.train.models import ALIGNER

Batch = dict[str, Any]


def cross_pairs(identities: list[str], step: int) -> tuple[list[int], list[int]]:
    """(sources, drivers): for each episode with another person in the batch, the index of one
    such episode, rotating with ``step`` through the candidates."""
    sources, drivers = [], []
    for i, identity in enumerate(identities):
        others = [j for j, other in enumerate(identities) if other != identity]
        if others:
            sources.append(i)
            drivers.append(others[(i + step) % len(others)])
    return sources, drivers


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters out of autograd inside the block: a loss computed there moves the images it
    sees, not the networks (the cross-motion term must not teach E_pose/E_exp to agree)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class AlignerTask:
    model = ALIGNER

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.a, self.device = cfg, cfg.aligner, device
        self.identity = make_identity_encoder(self.a.identity, cfg.root).to(device)  # E_id, frozen
        self.perceptual, self.perceptual_name = make_perceptual_net(self.a.loss, self.identity,
                                                                    cfg.root)
        self.perceptual.to(device)
        self.generator = Head2HeadAligner(self.a, self.identity.dim, cfg.root).to(device)  # G_A
        d = self.a.discriminator
        self.discriminator = Discriminator(self.a.size, d.base_channels,
                                           d.max_channels).to(device)  # D_A

    # -- inputs -----------------------------------------------------------------------------

    def prepare(self, batch: Batch, step: int, augment: bool = True) -> Batch:
        sources = batch["sources"].to(self.device)  # [B, K, 3, H, W], the K source crops
        target = batch["target"].to(self.device)    # I_T
        b, k = sources.shape[:2]
        with torch.no_grad():
            identity_codes = self.identity(sources.flatten(0, 1)).view(b, k, -1)
        landmarks = batch.get("target_landmarks")
        if augment:
            gens = episode_generators(self.a.train.seed, step, list(batch["target_key"]))
            aug = self.a.augment
            if aug.warp_target:
                target, landmarks = self.warp_target(target, landmarks, gens)
            posed = torch.cat([pose_augment(target[i:i + 1], g, aug.rotation_deg, aug.scale,
                                            aug.shift, aug.color, grayscale_p=aug.grayscale,
                                            max_blur=aug.blur) for i, g in enumerate(gens)])
        else:
            posed = target
        size = self.a.size
        inputs = {
            "sources": resize(sources.flatten(0, 1), size).view(b, k, 3, size, size),
            "identity_codes": identity_codes,
            "driver": driver_inputs(self.a, posed, self.landmark_motion(
                landmarks, target, list(batch["target_key"]))),
            "target": resize(target, size),
        }
        loss = self.a.loss
        if augment and (loss.cross_identity > 0 or loss.cross_motion > 0):
            cross_sources, drivers = cross_pairs(list(batch.get("identity", [])), step)
            if cross_sources:
                inputs["cross_sources"] = torch.tensor(cross_sources, device=self.device)
                inputs["cross_drivers"] = torch.tensor(drivers, device=self.device)
        return inputs

    def landmark_motion(self, landmarks: Tensor | None, target: Tensor,
                        keys: list[str]) -> Tensor | None:
        """The targets' landmark features (heser.face.motion) when the motion path reads
        them: the landmarks of I_T as I_A must rebuild it, not of A(I_T)."""
        if self.a.motion_input != "landmarks":
            return None
        if landmarks is None:
            raise ValueError("aligner.motion_input is landmarks but the batch has no "
                             "target_landmarks (KShotEpisodes(..., landmarks=True))")
        crop, features = target.shape[-1], []
        for key, marks in zip(keys, np.asarray(landmarks.cpu())):
            try:
                features.append(motion_features(marks, crop))
            except ValueError as error:  # name the frame, not just the problem
                raise ValueError(f"{key}: {error}") from error
        return torch.from_numpy(np.stack(features))

    def warp_target(self, target: Tensor, landmarks: Tensor | None,
                    gens: list[torch.Generator]) -> tuple[Tensor, Tensor]:
        """I_T and its landmarks moved by one random similarity per episode (A's ranges;
        ``augment.warp_target``, beyond the paper): the driver's roll, place and size then
        vary apart from who it is, and I_A must follow them to rebuild I_T."""
        if landmarks is None:
            raise ValueError("aligner.augment.warp_target needs the batch's target_landmarks")
        aug = self.a.augment
        draws = [draw_similarity(g, target[i:i + 1], aug.rotation_deg, aug.scale, aug.shift)
                 for i, g in enumerate(gens)]
        angles, scales, shifts = (torch.cat(parts) for parts in zip(*draws))
        height, width = target.shape[-2:]
        return (warp_similarity(target, angles, scales, shifts),
                similarity_points(landmarks.to(target.device, torch.float32), angles, scales,
                                  shifts, height, width))

    def motion_codes(self, images: Tensor) -> Tensor:
        """[E_pose, E_exp] codes of unaugmented images (the bare image encoders)."""
        return self.generator.motion_code(driver_inputs(self.a, images, None))

    # -- GanTask ----------------------------------------------------------------------------

    def fake(self, inputs: Batch, generator: nn.Module) -> dict[str, Tensor]:
        """{"image": I_A of each episode, then I_A^x of each cross pair when training has them
        (the discriminator judges all of it)}, one generator call."""
        driver = inputs["driver"]
        if "cross_drivers" not in inputs:
            return {"image": generator(inputs["sources"], inputs["identity_codes"],
                                       driver)}  # I_A
        drivers, n = inputs["cross_drivers"], len(inputs["target"])
        index = torch.cat([torch.arange(n, device=drivers.device), inputs["cross_sources"]])
        both = {name: torch.cat([x, x[drivers]]) for name, x in driver.items()}
        return {"image": generator(inputs["sources"], inputs["identity_codes"], both, index)}

    def real(self, inputs: Batch) -> Tensor:
        return inputs["target"]

    def discriminate(self, inputs: Batch, images: Tensor,
                     discriminator: nn.Module) -> tuple[Tensor, list[Tensor]]:
        return discriminator(images)  # D_A sees the image alone

    def generator_loss(self, inputs: Batch, fake: dict[str, Tensor],
                       discriminator: nn.Module) -> tuple[Tensor, dict[str, float]]:
        target = inputs["target"]
        animated, cross = fake["image"][:len(target)], fake["image"][len(target):]
        losses = aligner_generator_losses(animated, target, self.a.loss, self.perceptual,
                                          self.identity, discriminator)
        if not len(cross):
            return losses.total, losses.items()
        sources, drivers = inputs["cross_sources"], inputs["cross_drivers"]
        driver_motion = cross_motion = None  # landmark motion input: no image codes to compare
        if self.a.motion_input == "images":
            with torch.no_grad():
                driver_motion = self.motion_codes(target[drivers])
            with frozen(self.generator.pose, self.generator.expression):
                cross_motion = self.motion_codes(cross)
        cross_losses = cross_reenactment_losses(
            cross, inputs["identity_codes"][sources].mean(dim=1), cross_motion, driver_motion,
            self.a.loss, self.identity, discriminator)
        total = losses.total + cross_losses.total
        return total, {**losses.items(), **cross_losses.items(), "total": float(total.detach())}

    def sample_grid(self, inputs: Batch, fake: dict[str, Tensor], rows: int = 4) -> np.ndarray:
        """Rows of: the K sources | target I_T | animated I_A, as uint8 RGB."""
        animated = fake["image"][:len(inputs["target"])]
        n = min(rows, animated.shape[0])
        return tile_grid([*inputs["sources"].unbind(1), inputs["target"], animated], n)

    # -- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def preview(self, batch: Batch) -> np.ndarray:
        """The sample grid of held-out episodes, unaugmented pose path."""
        inputs = self.prepare(batch, 0, augment=False)
        self.generator.eval()
        grid = self.sample_grid(inputs, self.fake(inputs, self.generator))
        self.generator.train()
        return grid

    @torch.no_grad()
    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        """L1, SSIM, LPIPS (AlexNet, the paper's Table 2) and identity cosine (E_id: the
        network of the identity loss) of I_A against I_T, unaugmented pose path."""
        perceptual = lpips_network(self.cfg.path(self.cfg.paths.weights) / LPIPS_WEIGHTS)
        self.generator.eval()
        l1, ssim, lpips, cosine = [], [], [], []
        for batch in batches:
            inputs = self.prepare(batch, 0, augment=False)
            fake = self.fake(inputs, self.generator)["image"].float()
            target = inputs["target"]
            l1 += (fake - target).abs().mean(dim=(1, 2, 3)).tolist()
            lpips += perceptual(fake.cpu(), target.cpu()).tolist()
            cosine += (1 - cosine_distance(self.identity(fake), self.identity(target))).tolist()
            for a, b in zip(to_unit(fake).cpu().numpy(), to_unit(target).cpu().numpy()):
                ssim.append(structural_similarity(a, b, channel_axis=0, data_range=1.0))
        self.generator.train()
        return {"l1": float(np.mean(l1)), "ssim": float(np.mean(ssim)),
                "lpips": float(np.mean(lpips)), "identity_cosine": float(np.mean(cosine)),
                "episodes": float(len(l1))}
