"""The region-restricted correspondence of heser.nets.correspondence computed the
straightforward way, as a reference for the tests and bench/correspondence.py: the full
(hw x hw) similarity, -inf outside same-region pairs. O((hw)^2) memory, so never for training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from heser.nets.correspondence import Temperature


def dense_warp_with(f_query: Tensor, f_key: Tensor, regions_query: Tensor, regions_key: Tensor,
                    values_key: Tensor, tau: Temperature,
                    chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """heser.nets.correspondence.warp_with, densely. ``chunk_size`` is ignored (it keeps the
    two signatures interchangeable)."""
    b, _, h, w = f_query.shape
    centred_q = f_query.flatten(2) - f_query.flatten(2).mean(1, keepdim=True)  # [B, C, N]
    centred_k = f_key.flatten(2) - f_key.flatten(2).mean(1, keepdim=True)
    norms = centred_q.norm(dim=1)[:, :, None] * centred_k.norm(dim=1)[:, None, :]
    similarity = centred_q.transpose(1, 2) @ centred_k / norms.clamp_min(1e-12)  # eq. 4
    rq, rk = regions_query.flatten(1), regions_key.flatten(1)
    same = (rq[:, :, None] == rk[:, None, :]) & (rq[:, :, None] >= 0)
    has_key = same.any(-1, keepdim=True)
    # rows with no key at all get constant logits, then zero weight: no NaN, no gradient
    logits = (similarity / tau).masked_fill(~same, float("-inf")).masked_fill(~has_key, 0)
    attention = torch.softmax(logits, dim=-1) * has_key  # eq. 5
    if tuple(values_key.shape[-2:]) != (h, w):
        values_key = F.interpolate(values_key, size=(h, w), mode="area")
    out = attention @ values_key.flatten(2).transpose(1, 2).to(attention.dtype)  # eq. 6-7
    return (out.transpose(1, 2).reshape(b, -1, h, w),
            has_key.to(out.dtype).view(b, 1, h, w))


def dense_cycle(f_a: Tensor, f_t: Tensor, regions_a: Tensor, regions_t: Tensor,
                colors_t: Tensor, tau: Temperature) -> tuple[Tensor, Tensor]:
    """T -> A -> T as two dense warps: T's colours to A, then back to T (T querying A)."""
    reference, _ = dense_warp_with(f_a, f_t, regions_a, regions_t, colors_t, tau)
    return dense_warp_with(f_t, f_a, regions_t, regions_a, reference, tau)
