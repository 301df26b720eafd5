"""The Head2Scene Blender as a ``GanTask`` (Sec. 3.2, Appendix B).

Training uses ground-truth frames: I_A and I_T are the same image, so the blender learns to
recolour a grayscale head from the references and to inpaint the ring around it, with I_T as
the answer. The features of I_A are taken on a colour-jittered copy C'(I_A) and the references
drawn from the flipped target F(I_T), so copying pixels in place cannot solve it. Two cycles
supervise the correspondence (heser.losses.blender_generator_losses): F(I_T) -> A -> F(I_T), and
I_T' -> A -> I_T' through a second frame I_T' of the same video (another pose).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from heser.baselines import reference_baselines
from heser.config import Config
from heser.data.augment import jitter_colors
from heser.data.masks import fig4_masks
from heser.imaging import from_uint8, grayscale, resize, resize_labels, tile_grid, to_255, to_uint8
from heser.losses import CycleTrip, blender_generator_losses
from heser.metrics import LPIPS_WEIGHTS, lpips_network, psnr, ssim, summarize
from heser.nets.blender import Head2SceneBlender
from heser.nets.blender_discriminator import MaskConditionedDiscriminator
from heser.nets.correspondence import region_maps
from heser.nets.identity import make_identity_encoder
from heser.nets.perceptual import make_perceptual_net
from heser.train.gan import episode_generators
from heser.train.models import BLENDER

Batch = dict[str, Any]


class BlenderTask:
    model = BLENDER

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.b, self.device = cfg, cfg.blender, device
        # the perceptual fallback reuses the frozen identity network's features
        identity = make_identity_encoder(cfg.aligner.identity, cfg.root).to(device)
        self.perceptual, self.perceptual_name = make_perceptual_net(self.b.loss, identity,
                                                                    cfg.root)
        self.perceptual.to(device)
        self.generator = Head2SceneBlender(self.b).to(device)  # G_B
        d = self.b.discriminator
        self.discriminator = MaskConditionedDiscriminator(self.b.size, d.base_channels,
                                                          d.max_channels).to(device)  # D_B

    def prepare(self, batch: Batch, step: int) -> Batch:
        size, feat = self.b.size, self.b.size // 4
        target = resize(batch["target"].to(self.device), size)  # I_T (= I_A in training)
        labels = resize_labels(batch["target_parse"].to(self.device), size)
        second = resize(batch["sources"][:, 0].to(self.device), size)  # I_T'
        labels_second = resize_labels(batch["source_parse"][:, 0].to(self.device), size)
        masks = fig4_masks(labels, labels, self.cfg.masks.dilation)
        masks_second = fig4_masks(labels_second, labels_second, self.cfg.masks.dilation)
        jittered = torch.cat([jitter_colors(target[i:i + 1], g, self.b.color_jitter)
                              for i, g in enumerate(episode_generators(
                                  self.b.train.seed, step, list(batch["target_key"])))])  # C'(I_A)
        flipped_inpaint = masks.inpaint_target.flip(-1)[:, 0]  # F(M_T^I)
        return {
            "jittered_animated": jittered,
            "flipped_target": target.flip(-1),  # F(I_T)
            "regions_animated": region_maps(labels, masks.inpaint_animated[:, 0], (feat, feat)),
            "regions_target": region_maps(labels.flip(-1), flipped_inpaint, (feat, feat)),
            "head_mask": masks.head_animated,  # M_A^H
            "background": target * masks.background,  # I_T^BG
            "inpaint_mask": masks.inpaint_animated,  # M_A^I
            "gray_head": grayscale(target) * masks.head_animated,  # I_A^GH
            "second_target": second,
            "regions_second": region_maps(labels_second, masks_second.inpaint_target[:, 0],
                                          (feat, feat)),
            "target": target,
        }

    # -- GanTask ----------------------------------------------------------------------------

    def fake(self, inputs: Batch, generator: nn.Module) -> dict[str, Tensor]:
        return generator(**{k: v for k, v in inputs.items() if k != "target"})

    def real(self, inputs: Batch) -> Tensor:
        return inputs["target"]

    def discriminate(self, inputs: Batch, images: Tensor,
                     discriminator: nn.Module) -> tuple[Tensor, list[Tensor]]:
        conditions = torch.cat([inputs["head_mask"], inputs["inpaint_mask"]], dim=1)
        return discriminator(images, conditions)  # D_B, eq. 20-21

    def generator_loss(self, inputs: Batch, fake: dict[str, Tensor],
                       discriminator: nn.Module) -> tuple[Tensor, dict[str, float]]:
        losses = blender_generator_losses(
            fake["image"], inputs["target"],
            CycleTrip(fake["cycle"], inputs["flipped_target"], fake["cycle_valid"]),  # eq. 9
            CycleTrip(fake["cycle_second"], inputs["second_target"],
                      fake["cycle_second_valid"]),  # eq. 10
            self.discriminate(inputs, fake["image"], discriminator)[0],  # D_B(I_B)
            self.b.loss, self.perceptual)
        return losses.total, losses.items()

    def evaluate(self, batches: list[Batch]) -> dict[str, float]:
        return evaluate_blending(self, batches)

    @property
    def given(self) -> dict[str, str]:
        """What each method of the held-out comparison is given (reports/blender.json)."""
        return BLENDING_GIVEN

    def preview(self, batch: Batch) -> np.ndarray:
        return preview_blending(self, batch)

    def sample_grid(self, inputs: Batch, fake: dict[str, Tensor], rows: int = 4) -> np.ndarray:
        """Fig. 9's layout per row: target | animated head (gray) | masks (M_A^H red, M_A^I
        green) | inpainting reference I^IR | head-colour reference I^HR | result I_B."""
        n = min(rows, inputs["target"].shape[0])
        masks = torch.cat([inputs["head_mask"], inputs["inpaint_mask"],
                           torch.zeros_like(inputs["head_mask"])], dim=1) * 2 - 1
        tiles = [inputs["target"], inputs["gray_head"].expand(-1, 3, -1, -1), masks,
                 fake["inpaint_reference"], fake["head_reference"], fake["image"]]
        return tile_grid(tiles, n)


# -- evaluation: the blender against the non-learned use of its own inputs ------------------

# What each method of the held-out comparison is given (reports/blender.json "given"). All
# three see the same information: the luma of the scored frame itself inside the head.
BLENDING_GIVEN = {
    "blender": "the U-net (eq. 8) on I_A^GH (the gray head: the luma of the scored frame I_T "
               "itself inside M_A^H), I^HR and I^IR (colours drawn from the flipped frame F(I_T) "
               "by the correspondence from the colour-jittered C'(I_T)), I_T^BG and the masks",
    "recolour": "the same inputs without learning: I_A^GH's luma with I^HR's chroma (YIQ) inside "
                "M_A^H, I^IR in the ring M_A^I, I_T^BG elsewhere (heser.baselines)",
    "poisson": "the same inputs: the recolour baseline's head Poisson-blended (OpenCV "
               "seamlessClone) into I^IR's ring and I_T^BG",
}


def evaluate_blending(task: BlenderTask, batches: list[Batch]) -> dict[str, float]:
    """PSNR, SSIM and LPIPS inside the head (M_A^H) and the ring (M_A^I) against I_T, for the
    blender and the non-learned use of the same inputs (``BLENDING_GIVEN``); keys
    ``<method>/<region>_<metric>``, the mean over held-out items, and for PSNR
    ``<method>/<region>_psnr_identical``: items reproduced exactly (infinite PSNR), left out of
    the mean and counted. Runs the bare G_B: no collective call, so the main process may
    evaluate alone under torchrun."""
    scores: dict[str, list[float]] = {}
    cfg = task.cfg
    perceptual = lpips_network(cfg.path(cfg.paths.weights) / LPIPS_WEIGHTS)
    task.generator.eval()
    with torch.no_grad():
        for batch in batches:
            inputs = task.prepare(batch, 0)  # step 0: the same colour shift every time
            fake = task.fake(inputs, task.generator)
            for i in range(fake["image"].shape[0]):
                _score_item(inputs, fake, i, perceptual, scores)
    task.generator.train()
    out: dict[str, float] = {}
    for name, values in sorted(scores.items()):
        stats = summarize(values)
        out[name] = stats["mean"]
        if name.endswith("_psnr"):
            out[f"{name}_identical"] = float(stats["infinite"])
    return out


def _score_item(inputs: Batch, fake: dict[str, Tensor], i: int, perceptual: nn.Module,
                scores: dict[str, list[float]]) -> None:
    target = to_uint8(inputs["target"][i])
    head_mask = inputs["head_mask"][i, 0].cpu().numpy()
    ring = inputs["inpaint_mask"][i, 0].cpu().numpy()
    results = {"blender": to_uint8(fake["image"][i])}
    results.update(reference_baselines(
        to_255(inputs["gray_head"][i, 0]).cpu().numpy(), to_uint8(fake["head_reference"][i]),
        to_uint8(fake["inpaint_reference"][i]), to_uint8(inputs["background"][i]), head_mask,
        ring))
    images = torch.stack([from_uint8(image) for image in results.values()])
    maps = perceptual.distance_map(images, from_uint8(target)[None].expand_as(images))
    for (method, image), lpips_map in zip(results.items(), maps.cpu().numpy()):
        for region, mask in (("head", head_mask), ("inpaint", ring)):
            inside = mask > 0.5
            scores.setdefault(f"{method}/{region}_psnr", []).append(psnr(image, target, inside))
            scores.setdefault(f"{method}/{region}_ssim", []).append(ssim(image, target, inside))
            scores.setdefault(f"{method}/{region}_lpips", []).append(
                float(lpips_map[inside].mean()) if inside.any() else float("nan"))


def preview_blending(task: BlenderTask, batch: Batch) -> np.ndarray:
    """The Fig. 9 grid of held-out pairs, in eval mode."""
    inputs = task.prepare(batch, 0)
    task.generator.eval()
    with torch.no_grad():
        grid = task.sample_grid(inputs, task.fake(inputs, task.generator))
    task.generator.train()
    return grid

