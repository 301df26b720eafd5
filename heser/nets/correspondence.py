"""Semantic-guided colour reference creation of the Head2Scene Blender (Sec. 3.2, eq. 2-7).

The blender correlates FPN features f_A of the colour-jittered animated head C'(I_A) with
features f_T of the flipped target F(I_T), both [B, C, h, w], and only within one semantic
region r in {face, hair, eye, nose, lip, tooth, inpainting}:

  M_r(u, v) = <f_A(u) - mean_c f_A(u), f_T(v) - mean_c f_T(v)> / (norms)    eq. 4, u, v in r
  A_r(u, v) = softmax_v(M_r(u, v) / tau)                                    eq. 5
  I^R(u)    = sum_v A_r(u, v) I_T(v)                                        eq. 6-7

I^HR (eq. 6) is I^R on the head regions of I_A, I^IR (eq. 7) on the animated inpainting mask
M_A^I, whose keys are the target's inpainting mask M_T^I. Whoever flips I_T flips its label
map, inpainting mask and colours with it: everything about T must describe the same picture.

Memory: a dense (hw x hw) similarity is 1 GiB per item at 128 x 128 features (512 crops) and
needs several copies for the softmax and its gradient. Here each region's query and key
positions are gathered and the similarity is computed for ``chunk_size`` query rows at a time;
under autograd each chunk is checkpointed (recomputed in the backward pass) so the peak is about
chunk_size x (region size in the target) in the forward and the backward pass alike.

Resolution: I_T is brought to the feature size by area averaging (each feature cell gets the
mean colour of the pixels it covers, so no colour is aliased in), and the references go back to
image size bilinearly (:func:`split_references`).

Cycle (:func:`cycle_back`): with no ground truth for I^HR, the paper supervises the
correspondence by warping the reference back to the target through the transposed
correspondence and asking for the target's colours again (eq. 9-10, 18-19). The blender computes
each reference once and hands it to both the U-net input and the cycle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from heser.face.labels import CORRESPONDENCE_REGIONS

# Region index order of region maps: the head groups of CORRESPONDENCE_REGIONS (face, hair,
# eye, nose, lip, tooth), then the inpainting region. -1 marks a position in no region.
REGION_NAMES: tuple[str, ...] = (*CORRESPONDENCE_REGIONS, "inpainting")
INPAINTING = REGION_NAMES.index("inpainting")
NO_REGION = -1
DEFAULT_CHUNK = 1024

Temperature = float | Tensor


# --------------------------------------------------------------------------------------------
# Region maps


def _label_table(device: torch.device) -> Tensor:
    """lut[label id] = region index (-1 for labels outside every group), for uint8 ids."""
    lut = torch.full((256,), NO_REGION, dtype=torch.long)
    for index, labels in enumerate(CORRESPONDENCE_REGIONS.values()):
        lut[[int(label) for label in labels]] = index
    return lut.to(device)


def _nearest(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, H, W] -> [B, h, w] by nearest sampling at cell centres ("nearest-exact": plain
    "nearest" would take each cell's top-left pixel, biasing regions up and left)."""
    return F.interpolate(maps[:, None].float(), size=size, mode="nearest-exact")[:, 0]


def region_maps(labels: Tensor, inpaint_mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Region index per feature position: [B, H, W] label ids (uint8 or long, HeSer ids) and
    [B, H, W] inpainting mask (bool or {0, 1} float; M_A^I for I_A, M_T^I for I_T) -> [B, h, w]
    long in 0..len(REGION_NAMES)-1 (order of ``REGION_NAMES``), -1 for no region.

    The head regions cover exactly the head mask M^H (CORRESPONDENCE_REGIONS = HEAD_REGIONS),
    so the head-colour reference I^HR is drawn only where the U-net uses it. The inpainting mask
    M^I (a ring outside the image's head mask) overrides the labels: there the colours come from
    the target's ring whatever the parser called those pixels (neck, body, background). Outside
    the head and the ring a position is in no region.
    """
    if labels.shape != inpaint_mask.shape or labels.ndim != 3:
        raise ValueError(f"labels {tuple(labels.shape)} and inpainting mask "
                         f"{tuple(inpaint_mask.shape)} must both be [B, H, W]")
    regions = _label_table(labels.device)[_nearest(labels, size).long()]
    return regions.masked_fill(_nearest(inpaint_mask, size) > 0.5, INPAINTING)


# --------------------------------------------------------------------------------------------
# Region-restricted warping


def _centred_unit(features: Tensor) -> Tensor:
    """[B, C, h, w] -> [B, h*w, C]: every feature vector minus its channel mean, at unit length,
    so that a dot product is eq. 4's centred cosine similarity."""
    flat = features.flatten(2).transpose(1, 2)
    return F.normalize(flat - flat.mean(-1, keepdim=True), dim=-1)


def _colours_at(values: Tensor, size: tuple[int, int]) -> Tensor:
    """Values (I_T) at the feature size, by area averaging when they are not already there."""
    if tuple(values.shape[-2:]) == tuple(size):
        return values
    return F.interpolate(values, size=size, mode="area")


def _attend(query: Tensor, key: Tensor, values: Tensor, tau: Temperature) -> Tensor:
    """One chunk of eq. 5-7: softmax_v(M_r(u, v) / tau) @ values, [n, C] x [m, C] -> [n, D]."""
    return torch.softmax(query @ key.T / tau, dim=-1) @ values


def _attend_chunked(query: Tensor, key: Tensor, values: Tensor, tau: Temperature,
                    chunk_size: int) -> Tensor:
    """``_attend`` over ``chunk_size`` query rows at a time. Under autograd each chunk is
    checkpointed: autograd would otherwise keep every chunk's attention for the backward pass,
    i.e. the whole region-by-region matrix."""
    tensors = (query, key, values, tau) if isinstance(tau, Tensor) else (query, key, values)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    pieces = []
    for start in range(0, query.shape[0], chunk_size):
        rows = query[start:start + chunk_size]
        if recompute:
            pieces.append(checkpoint(_attend, rows, key, values, tau, use_reentrant=False,
                                     preserve_rng_state=False))  # _attend draws no numbers
        else:
            pieces.append(_attend(rows, key, values, tau))
    return torch.cat(pieces)


def _check(f_query: Tensor, f_key: Tensor, regions_query: Tensor, regions_key: Tensor,
           values_key: Tensor) -> None:
    b, _, h, w = f_query.shape
    if f_key.shape != f_query.shape:
        raise ValueError(f"feature maps differ: {tuple(f_query.shape)} vs {tuple(f_key.shape)}")
    for name, regions in (("query", regions_query), ("key", regions_key)):
        if tuple(regions.shape) != (b, h, w):
            raise ValueError(f"{name} region map {tuple(regions.shape)} is not [{b}, {h}, {w}]")
    if values_key.ndim != 4 or values_key.shape[0] != b:
        raise ValueError(f"values {tuple(values_key.shape)} are not [{b}, D, H, W]")


def warp_with(f_query: Tensor, f_key: Tensor, regions_query: Tensor, regions_key: Tensor,
              values_key: Tensor, tau: Temperature,
              chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """Warp ``values_key`` onto the query positions through the region-restricted attention of
    eq. 4-5: out(u) = sum_v softmax_v(M_r(u, v) / tau) values(v) over v in the region r of u.
    With A = FPN(C'(I_A)) querying T = FPN(F(I_T)) and the target's colours as values, this is
    the colour reference I^R = I^HR + I^IR at feature resolution (eq. 6-7).

    f_query, f_key: [B, C, h, w]; regions_*: [B, h, w] (:func:`region_maps`); values_key:
    [B, D, H, W], area-resampled to h x w. Returns ([B, D, h, w], validity [B, 1, h, w] float):
    a query position with no region, or whose region is empty in the key image, gets 0 and
    validity 0. Loops over batch items and regions only; peak memory is about chunk_size x
    (region size in the key image).
    """
    _check(f_query, f_key, regions_query, regions_key, values_key)
    b, _, h, w = f_query.shape
    n = h * w
    query, key = _centred_unit(f_query), _centred_unit(f_key)
    values = _colours_at(values_key, (h, w)).flatten(2).transpose(1, 2).to(query.dtype)
    flat_q, flat_k = regions_query.flatten(1), regions_key.flatten(1)
    rows, pieces = [], []
    for item in range(b):
        for region in range(len(REGION_NAMES)):
            q_idx = (flat_q[item] == region).nonzero().squeeze(1)
            k_idx = (flat_k[item] == region).nonzero().squeeze(1)
            if q_idx.numel() == 0 or k_idx.numel() == 0:
                continue
            pieces.append(_attend_chunked(query[item, q_idx], key[item, k_idx],
                                          values[item, k_idx], tau, chunk_size))
            rows.append(q_idx + item * n)
    out = values.new_zeros(b * n, values.shape[-1])
    valid = torch.zeros(b * n, dtype=values.dtype, device=values.device)
    if rows:
        index = torch.cat(rows)
        out = out.index_copy(0, index, torch.cat(pieces))
        valid[index] = 1
    return out.view(b, h, w, -1).permute(0, 3, 1, 2), valid.view(b, 1, h, w)


def split_references(reference: Tensor, regions_a: Tensor,
                     image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(I^HR, I^IR) at image size from the colour reference I^R of :func:`warp_with`.

    I^HR (eq. 6) keeps the positions of I_A in a head region (face .. tooth), I^IR (eq. 7) those
    in the inpainting region M_A^I; each is zero elsewhere and is upsampled bilinearly, so a
    region's border blends with the zeros around it over about one feature cell.
    """
    head = ((regions_a >= 0) & (regions_a != INPAINTING)).unsqueeze(1)
    inpaint = (regions_a == INPAINTING).unsqueeze(1)
    return (_upsample(reference * head, image_size), _upsample(reference * inpaint, image_size))


def _upsample(image: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------
# Cycle


def cycle_back(f_a: Tensor, f_t: Tensor, regions_a: Tensor, regions_t: Tensor,
               reference: Tensor, tau: Temperature,
               chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """A's colour reference warped back onto T through the transposed correspondence: the
    return half of the cycle T -> A -> T (eq. 9-10).

    ``reference`` is :func:`warp_with`'s output for A querying T (T's colours drawn onto A);
    this computes back(v) = sum_u softmax_u(M_r(u, v) / tau) reference(u) over the positions u
    of A in the region r of v, so back ~ T's colours where the correspondence is consistent.
    Every such u has a colour: its region r holds v, so it is not empty in T. Returns
    (back [B, 3, h, w], validity [B, 1, h, w]: 0 where v's region is empty in A).
    """
    return warp_with(f_t, f_a, regions_t, regions_a, reference, tau, chunk_size)
