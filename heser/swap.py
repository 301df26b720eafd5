"""Head swapping with the trained models: K source photos + a target crop -> I_B (Fig. 2).

:class:`Swapper` works on aligned crops, the same crops the crop stage makes:

1. the sources' code [e_por, e_id], averaged over K (eq. 1), once per source set;
2. the Head2Head Aligner reenacts it into the target's pose and expression: I_A;
3. I_A and I_T are parsed (the face backend finds I_A's landmarks; if it finds no face there,
   the target's landmarks stand in, since I_A is drawn in the target's pose, and this is
   counted), the Fig. 4 masks are built and the Head2Scene Blender draws I_B.

Whole images and videos (detection, the crop window, pasting back) are in :mod:`heser.swap_media`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from heser.assets import sha256_file
from heser.config import Config
from heser.data.masks import Fig4Masks, dilate, dilation_radius, fig4_masks
from heser.face.backends import make_face_backend, make_parser
from heser.face.cropper import CroppedFace, Cropper, choose_face
from heser.face.motion import motion_features
from heser.imaging import from_uint8, grayscale, resize, resize_labels, to_uint8
from heser.nets.aligner import Head2HeadAligner, driver_inputs
from heser.nets.blender import Head2SceneBlender
from heser.nets.correspondence import region_maps
from heser.nets.identity import make_identity_encoder
from heser.train.checkpoint import load_checkpoint
from heser.train.models import ALIGNER, BLENDER


class SwapError(ValueError):
    """The swap cannot be made (no face, missing model...); the message says what to do."""


@dataclass
class CropSwap:
    """Everything one target crop produced, as tensors [1, C, S, S] in [-1, 1] (masks {0, 1})."""

    animated: Tensor  # I_A, at the blender's size
    blended: Tensor  # I_B
    head_reference: Tensor  # I^HR
    inpaint_reference: Tensor  # I^IR
    masks: Fig4Masks
    animated_labels: np.ndarray  # label map of I_A at the crop size
    animated_parsed: bool  # False: I_A had no detectable face, the target's landmarks were used

    def changed(self) -> Tensor:
        """Where I_B may differ from I_T: dil(M_A^H u M_T^H), the complement of the background."""
        return 1 - self.masks.background


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SwapError("swap.device is 'cuda' but no CUDA device is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def model_paths(cfg: Config) -> tuple[Path, Path]:
    return ALIGNER.checkpoint(cfg), BLENDER.checkpoint(cfg)


def _load_generator(path: Path, stage: str) -> dict[str, Tensor]:
    if not path.exists():
        raise SwapError(f"{path}: no trained model; run `dvc repro {stage}` (or pass its path)")
    state = load_checkpoint(path)
    if "generator" not in state:
        raise SwapError(f"{path}: not a heser {stage} checkpoint (no generator weights)")
    return state["generator"]


class Swapper:
    """The trained aligner and blender plus the face backend and parser, in eval mode."""

    def __init__(self, cfg: Config, aligner_checkpoint: Path | None = None,
                 blender_checkpoint: Path | None = None, device: torch.device | None = None):
        self.cfg = cfg
        self.device = device or pick_device(cfg.swap.device)
        default_aligner, default_blender = model_paths(cfg)
        aligner_state = _load_generator(aligner_checkpoint or default_aligner, "train_aligner")
        blender_state = _load_generator(blender_checkpoint or default_blender, "train_blender")
        self.identity = make_identity_encoder(cfg.aligner.identity, cfg.root).to(self.device)
        self.aligner = Head2HeadAligner(cfg.aligner, self.identity.dim, cfg.root)
        self.aligner.load_state_dict(aligner_state)
        self.blender = Head2SceneBlender(cfg.blender)
        self.blender.load_state_dict(blender_state)
        self.aligner.to(self.device).eval()
        self.blender.to(self.device).eval()
        weights = cfg.path(cfg.paths.weights)
        self.backend = make_face_backend(cfg, weights)
        self.cropper = Cropper(self.backend, cfg.crop)
        self.parser = make_parser(cfg, weights)

    def load_aligner(self, state: dict[str, Tensor]) -> None:
        """Swap in other aligner weights (a subject-specific fine-tune)."""
        self.aligner.load_state_dict(state)
        self.aligner.to(self.device).eval()

    @torch.no_grad()
    def source_code(self, crops: list[np.ndarray]) -> Tensor:
        """[e_por, e_id] of the K source crops, averaged (eq. 1): [1, D]."""
        sources = torch.cat([from_uint8(crop)[None].to(self.device) for crop in crops])
        identity_codes = self.identity(sources)[None]  # [1, K, D_id]
        size = self.cfg.aligner.size
        return self.aligner.source_code(resize(sources, size)[None], identity_codes)

    @torch.no_grad()
    def animate(self, code: Tensor, target: Tensor, landmarks: np.ndarray | None = None
                ) -> Tensor:
        """I_A from the sources' code and the target crop (no augmentation A at inference);
        ``landmarks``: the target's, in crop pixels (read with landmark motion input)."""
        motion = None
        if landmarks is not None and self.cfg.aligner.motion_input == "landmarks":
            motion = torch.from_numpy(motion_features(landmarks, target.shape[-1]))[None]
        return self.aligner.animate(code, driver_inputs(self.cfg.aligner, target, motion))

    def parse(self, crop: np.ndarray, landmarks: np.ndarray, scheme: str) -> np.ndarray:
        return self.parser(crop, landmarks, scheme)

    def parse_animated(self, animated: np.ndarray, target_face: tuple[np.ndarray, str]
                       ) -> tuple[np.ndarray, bool]:
        """Label map of I_A (uint8 at the crop size); falls back to the target's landmarks."""
        faces = self.backend(animated)
        if faces:
            face = choose_face(faces, None)
            return self.parse(animated, face.landmarks, face.scheme), True
        landmarks, scheme = target_face
        return self.parse(animated, landmarks, scheme), False

    @torch.no_grad()
    def swap_crop(self, code: Tensor, target_crop: np.ndarray, target_labels: np.ndarray,
                  target_landmarks: np.ndarray, scheme: str) -> CropSwap:
        """I_B for one aligned target crop (uint8 at crop.size) and its label map."""
        size = target_crop.shape[0]
        target = from_uint8(target_crop)[None].to(self.device)
        animated = resize(self.animate(code, target, target_landmarks), size)  # I_A, crop size
        animated_labels, parsed = self.parse_animated(to_uint8(animated),
                                                      (target_landmarks, scheme))
        out = self.blend(animated, target, animated_labels, target_labels)
        return CropSwap(animated=out["animated"], blended=out["image"],
                        head_reference=out["head_reference"],
                        inpaint_reference=out["inpaint_reference"], masks=out["masks"],
                        animated_labels=animated_labels, animated_parsed=parsed)

    @torch.no_grad()
    def blend(self, animated: Tensor, target: Tensor, animated_labels: np.ndarray,
              target_labels: np.ndarray) -> dict[str, Tensor | Fig4Masks]:
        """The Head2Scene Blender at inference: references from I_T itself (no flip F, no
        colour jitter C': those only keep training from copying pixels in place)."""
        b, feat = self.cfg.blender, self.cfg.blender.size // 4
        animated, target = resize(animated, b.size), resize(target, b.size)
        labels_a = resize_labels(torch.from_numpy(animated_labels)[None].to(self.device), b.size)
        labels_t = resize_labels(torch.from_numpy(target_labels)[None].to(self.device), b.size)
        masks = fig4_masks(labels_a, labels_t, self.cfg.masks.dilation)
        out = self.blender(
            animated, target,
            region_maps(labels_a, masks.inpaint_animated[:, 0], (feat, feat)),
            region_maps(labels_t, masks.inpaint_target[:, 0], (feat, feat)),
            head_mask=masks.head_animated, background=target * masks.background,  # I_T^BG
            inpaint_mask=masks.inpaint_animated,  # M_A^I
            gray_head=grayscale(animated) * masks.head_animated,  # I_A^GH
            cycle=False)
        return {**out, "animated": animated, "masks": masks}


def paste_alpha(swap: CropSwap, size: int, feather: float) -> np.ndarray:
    """The paste-back weight at the crop size (HxW float in [0, 1]): the region the blender
    changed, grown by the feather radius and blurred over it so the seam falls where I_B
    already matches I_T; it fades to zero at the crop border so the crop's edge never shows."""
    import cv2

    changed = resize(swap.changed(), size)[0, 0].clamp(0, 1)
    radius = dilation_radius(feather, size)
    grown = dilate((changed > 0.5).float()[None, None], radius)[0, 0].cpu().numpy()
    alpha = cv2.GaussianBlur(grown, (0, 0), max(radius, 1) / 2) if radius else grown
    ramp = np.minimum(np.arange(size), size - 1 - np.arange(size))  # 0 on the border
    edge = np.clip(ramp / max(radius, 1), 0, 1)
    return np.clip(alpha * edge[:, None] * edge[None, :], 0, 1).astype(np.float32)


def finetune_key(cfg: Config, crops: list[np.ndarray], checkpoint: Path, steps: int) -> str:
    """Cache key of a subject fine-tune: the source crops it trains on, the base model, N and
    the aligner parameters."""
    digest = hashlib.sha256()
    for crop in crops:
        digest.update(np.ascontiguousarray(crop).tobytes())
    parts = {"crops": digest.hexdigest(), "checkpoint": sha256_file(checkpoint), "steps": steps,
             "aligner": cfg.aligner.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def finetuned_aligner(cfg: Config, crops: list[CroppedFace], names: list[str], steps: int,
                      checkpoint: Path | None = None) -> Path:
    """The subject-specific aligner for these source crops (heser.train.finetune, imported only
    here), computed once and cached under swap.finetune_cache."""
    checkpoint = checkpoint or model_paths(cfg)[0]
    if not checkpoint.exists():
        raise SwapError(f"{checkpoint}: no trained aligner; run `dvc repro train_aligner`")
    key = finetune_key(cfg, [crop.image for crop in crops], checkpoint, steps)
    cached = cfg.path(cfg.swap.finetune_cache) / f"{key}.pt"
    if not cached.exists():
        from heser.train.finetune import finetune

        finetune(cfg, crops, names, checkpoint, steps, cached)
    return cached
