"""The landmark motion encoder: [e_pose, e_exp] from a driver's landmark features.

Used in place of E_pose and E_exp when ``aligner.motion_input`` is ``landmarks`` (a deviation
from the paper, README "Where we deviate"): the features of heser/face/motion.py go through a
batch norm without affine terms (each feature at unit spread over the training data, running
statistics at inference, so a head turn of a few degrees is not lost beside the features'
fixed parts) and a two-layer MLP.
"""

from __future__ import annotations

from torch import Tensor, nn

from heser.nets.blocks import CodeBatchNorm


class LandmarkMotionEncoder(nn.Module):
    """Landmark features [B, F] -> motion codes [B, pose_dim + expression_dim]."""

    def __init__(self, features: int, hidden: int, pose_dim: int, expression_dim: int):
        super().__init__()
        self.norm = CodeBatchNorm(features)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, pose_dim + expression_dim))

    def forward(self, features: Tensor) -> Tensor:
        return self.mlp(self.norm(features))
