"""G_A, the Head2Head Aligner (Sec. 3.1): E_por, E_pose, E_exp, the MLP and the generator.

The frozen identity encoder E_id is not part of it: the trainer (and inference) computes the
identity code once per source with it and also uses it for the identity loss, so keeping it
outside keeps it out of the optimiser and the checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.config import Aligner
from heser.data.augment import central_crop
from heser.face.motion import MOTION_FEATURES
from heser.imaging import resize
from heser.nets.blocks import CodeBatchNorm
from heser.nets.generator import AdaINMLP, StyleGenerator
from heser.nets.landmark_motion import LandmarkMotionEncoder
from heser.nets.motion_encoder import MotionEncoder
from heser.nets.portrait_encoder import PortraitEncoder

# The driver as the motion path sees it: {"pose_input": A(I_T), "expression_input": C(A(I_T))}
# for E_pose and E_exp, or {"landmark_motion": [B, MOTION_FEATURES]} with landmark motion input.
Driver = dict[str, Tensor]


def driver_inputs(cfg: Aligner, image: Tensor, landmark_motion: Tensor | None) -> Driver:
    """The motion path's inputs from the driver image (A(I_T) in training, I_T at inference)
    and its landmark features (heser.face.motion; only read with landmark motion input)."""
    if cfg.motion_input == "landmarks":
        if landmark_motion is None:
            raise ValueError("aligner.motion_input is landmarks but the driver came without "
                             "landmark features")
        return {"landmark_motion": landmark_motion.to(image.device, torch.float32)}
    return {"pose_input": resize(image, cfg.pose.input_size),  # A(I_T)
            "expression_input": central_crop(image, cfg.expression.crop,
                                              cfg.expression.input_size)}  # C(A(I_T))


class Head2HeadAligner(nn.Module):
    def __init__(self, cfg: Aligner, identity_dim: int, root: Path = Path(".")):
        super().__init__()
        por = cfg.portrait
        weights = root / por.imagenet_weights if por.imagenet_weights else None
        spectral = cfg.encoder_spectral_norm
        self.portrait = PortraitEncoder(por.backbone, por.dim, por.width, por.stages,
                                        por.max_channels, weights, spectral)  # E_por
        if cfg.motion_input == "landmarks":
            self.landmark_motion = LandmarkMotionEncoder(MOTION_FEATURES, cfg.mlp_hidden,
                                                         cfg.pose.dim, cfg.expression.dim)
        else:
            self.pose = MotionEncoder(cfg.pose.dim, cfg.pose.width, spectral)  # E_pose
            self.expression = MotionEncoder(cfg.expression.dim, cfg.expression.width,
                                            spectral)  # E_exp
        self.motion_input = cfg.motion_input
        self.generator = StyleGenerator(cfg.size, cfg.generator.start_size,
                                        cfg.generator.base_channels, cfg.generator.max_channels)
        self.code_dims = (por.dim, identity_dim, cfg.pose.dim, cfg.expression.dim)
        self.code_norm = cfg.code_norm
        self.mlp = AdaINMLP(sum(self.code_dims), cfg.mlp_hidden, self.generator.n_params,
                            cfg.mlp_spectral_norm)
        normalised = {"none": 0, "expression": cfg.expression.dim,
                      "motion": cfg.pose.dim + cfg.expression.dim}[cfg.code_batch_norm]
        self.motion_norm = CodeBatchNorm(normalised) if normalised else None

    def source_code(self, sources: Tensor, identity_codes: Tensor) -> Tensor:
        """[e_por, e_id] averaged over the K sources (eq. 1): sources [B, K, 3, H, W],
        identity_codes [B, K, D_id]. Inference computes it once per source set."""
        return torch.cat([self.portrait.average(sources), identity_codes.mean(dim=1)], dim=1)

    def animate(self, source_code: Tensor, driver: Driver) -> Tensor:
        """I_A from the sources' code and the driver's motion inputs (images in [-1, 1])."""
        return self.generator(self.mlp(self.mlp_input(source_code, driver)))

    def motion_code(self, driver: Driver) -> Tensor:
        """[e_pose, e_exp] of the driver."""
        if self.motion_input == "landmarks":
            return self.landmark_motion(driver["landmark_motion"])
        return torch.cat([self.pose(driver["pose_input"]),
                          self.expression(driver["expression_input"])], dim=1)

    def mlp_input(self, source_code: Tensor, driver: Driver) -> Tensor:
        """[e_por, e_id, e_pose, e_exp] as the MLP sees them."""
        motion = self.motion_code(driver)
        if self.motion_norm is not None:  # e_exp, or [e_pose, e_exp]: the last features
            kept, normalised = motion.split(
                [motion.shape[1] - self.motion_norm.num_features,
                 self.motion_norm.num_features], dim=1)
            motion = torch.cat([kept, self.motion_norm(normalised)], dim=1)
        return self.standardised(torch.cat([source_code, motion], dim=1))

    def standardised(self, codes: Tensor) -> Tensor:
        """[e_por, e_id, e_pose, e_exp], each standardised over its features when
        ``code_norm`` is on: every code then reaches the MLP at the same unit scale, however
        small its encoder's outputs are (the dlib e_id is unit-norm, 0.09 per feature)."""
        if not self.code_norm:
            return codes
        return torch.cat([F.layer_norm(code, code.shape[-1:])
                          for code in codes.split(self.code_dims, dim=1)], dim=1)

    def forward(self, sources: Tensor, identity_codes: Tensor, driver: Driver,
                source_index: Tensor | None = None) -> Tensor:
        """I_A per driver; ``source_index`` [N] names the source set (row of ``sources``) each
        of the N drivers animates, by default row i for driver i. Training's cross-identity
        pairs use it to animate each source set twice in one call."""
        code = self.source_code(sources, identity_codes)
        if source_index is not None:
            code = code[source_index]
        return self.animate(code, driver)
