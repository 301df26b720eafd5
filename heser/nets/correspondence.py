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

Cycle (:func:`cycle_reference`): with no ground truth for I^HR, the paper supervises the
correspondence by warping the reference back to the target through the transposed
correspondence and asking for I_T again (eq. 9-10; eq. 18-19 with a second frame I_T' of the
same video). See that function for exactly what is implemented.
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

    Precedence: the inpainting mask overrides the labels. M^I is a ring around the head that
    covers the neck (a "face" label) and background the parser labelled; there the reference
    must come from the target's ring, not from its face skin.
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


def color_references(f_a: Tensor, f_t: Tensor, regions_a: Tensor, regions_t: Tensor,
                     colors_t: Tensor, tau: Temperature,
                     chunk_size: int = DEFAULT_CHUNK) -> tuple[Tensor, Tensor]:
    """The colour reference I^R = I^HR + I^IR at feature resolution (eq. 4-7).

    f_a = FPN(C'(I_A)), f_t = FPN(F(I_T)): [B, C, h, w]; regions_a / regions_t: [B, h, w];
    colors_t: the target colours [B, 3, H, W] (area-resampled to h x w). Returns the reference
    [B, 3, h, w] and its validity [B, 1, h, w] (0 where u has no region or its region is empty
    in the target; the reference is 0 there).
    """
    return warp_with(f_a, f_t, regions_a, regions_t, colors_t, tau, chunk_size)


def split_references(reference: Tensor, regions_a: Tensor,
                     image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(I^HR, I^IR) at image size from :func:`color_references`' output.

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


def cycle_reference(f_a: Tensor, f_t: Tensor, regions_a: Tensor, regions_t: Tensor,
                    colors_t: Tensor, tau: Temperature, chunk_size: int = DEFAULT_CHUNK, *,
                    f_back: Tensor | None = None,
                    regions_back: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """I_T's colours warped to A and back again (the cycle of eq. 9-10 and 18-19).

    1. I^R = :func:`color_references` (A queries T: softmax over v of M_r(u, v) / tau);
    2. back(v) = sum_u softmax_u(M_r(u, v) / tau) I^R(u) for v in region r of the return image:
       the same centred-cosine correspondence transposed (the return image queries A), over
       the positions u of A whose reference is valid.

    The return image defaults to T itself, so back ~ I_T when the correspondence is consistent
    (the loss compares them where the returned validity is 1). Pass ``f_back`` /
    ``regions_back`` of a second frame I_T' of the same video to warp I_T's colours through A
    onto I_T' instead (to compare with I_T'). Returns (back [B, 3, h, w], validity [B, 1, h, w]).
    """
    f_back = f_t if f_back is None else f_back
    regions_back = regions_t if regions_back is None else regions_back
    reference, valid = color_references(f_a, f_t, regions_a, regions_t, colors_t, tau,
                                        chunk_size)
    # positions of A with no colour (region empty in T) must not lend their zeros to T'
    keys_a = regions_a.masked_fill(valid[:, 0] == 0, NO_REGION)
    return warp_with(f_back, f_a, regions_back, keys_a, reference, tau, chunk_size)


# --------------------------------------------------------------------------------------------
# Dense reference, for tests and the benchmark only


def dense_warp_with(f_query: Tensor, f_key: Tensor, regions_query: Tensor, regions_key: Tensor,
                    values_key: Tensor, tau: Temperature,
                    chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """:func:`warp_with` the straightforward way: the full (hw x hw) similarity, -inf outside
    same-region pairs. O((hw)^2) memory: tests and benchmarks only. ``chunk_size`` is ignored
    (it keeps the two signatures interchangeable)."""
    _check(f_query, f_key, regions_query, regions_key, values_key)
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
    values = _colours_at(values_key, (h, w)).flatten(2).transpose(1, 2).to(attention.dtype)
    out = attention @ values  # eq. 6-7
    return (out.transpose(1, 2).reshape(b, -1, h, w),
            has_key.to(out.dtype).view(b, 1, h, w))


def dense_color_references(f_a: Tensor, f_t: Tensor, regions_a: Tensor, regions_t: Tensor,
                           colors_t: Tensor, tau: Temperature,
                           chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """:func:`color_references` with :func:`dense_warp_with`: tests and benchmarks only."""
    return dense_warp_with(f_a, f_t, regions_a, regions_t, colors_t, tau, chunk_size)
