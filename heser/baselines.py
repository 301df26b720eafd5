"""Head-swap baselines without a learned blender, for the blender's validation and `evaluate`.

``baselines``: the hole (the head and the ring around it) is first filled by OpenCV's
inpainting, then the head is pasted as it is ("paste") or with OpenCV's Poisson blending,
seamlessClone ("poisson").

``reference_baselines``: the blender's own inputs (eq. 8) used without learning: the gray head
I_A^GH recoloured with the chroma of the head-colour reference I^HR, the ring taken from the
inpainting reference I^IR, the background I_T^BG kept ("recolour"); and that recoloured head
Poisson-blended into the same ring and background ("poisson").
"""

from __future__ import annotations

import cv2
import numpy as np

from heser.imaging import LUMA


def baselines(head: np.ndarray, background: np.ndarray, head_mask: np.ndarray,
              hole: np.ndarray) -> dict[str, np.ndarray]:
    """``head`` pasted into ``background`` (uint8 RGB, same size) where ``head_mask`` is set,
    after ``hole`` is inpainted: {"paste": ..., "poisson": ...}."""
    filled = cv2.inpaint(background, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    mask = head_mask.astype(bool)
    paste = np.where(mask[..., None], head, filled)
    return {"paste": paste, "poisson": poisson_clone(head, filled, mask)}


def poisson_clone(head: np.ndarray, destination: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``head`` Poisson-blended into ``destination`` (uint8 RGB, same size) where ``mask`` is
    set, in place (OpenCV's seamlessClone, NORMAL_CLONE): inside the mask the result keeps the
    head's gradients and takes the destination's values on the mask's outermost pixels, so
    the destination there must already hold the surroundings (an inpainted hole). An empty
    mask (or one only on the image border, which seamlessClone cannot take) pastes the head
    naively."""
    if head.shape != destination.shape or head.ndim != 3 or head.shape[2] != 3:
        raise ValueError(f"Poisson blending needs same-sized RGB images, got {head.shape} and "
                         f"{destination.shape}")
    clone_mask = (np.asarray(mask).astype(bool) * 255).astype(np.uint8)
    clone_mask[[0, -1], :] = 0  # seamlessClone needs the mask off the border
    clone_mask[:, [0, -1]] = 0
    ys, xs = np.nonzero(clone_mask)
    if len(xs) == 0:
        return np.where(np.asarray(mask).astype(bool)[..., None], head, destination)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    center = (int((x0 + x1 + 1) // 2), int((y0 + y1 + 1) // 2))  # keeps the head in place
    return cv2.seamlessClone(head, destination, clone_mask, center, cv2.NORMAL_CLONE)


def recolour(gray_head: np.ndarray, head_reference: np.ndarray) -> np.ndarray:
    """The luma of ``gray_head`` (H x W, 0..255: I_A^GH) with the chroma of ``head_reference``
    (uint8 RGB: I^HR), uint8 RGB. Luma is BT.601's Y (``heser.imaging.LUMA``, YIQ's first
    row); YIQ's chroma rows I and Q sum to zero, so keeping I and Q while setting Y adds the
    same amount to R, G and B: I^HR + (Y_gray - Y(I^HR)), rounded and clipped."""
    colours = np.asarray(head_reference, np.float64)
    shift = np.asarray(gray_head, np.float64) - colours @ np.asarray(LUMA)
    return np.clip(np.round(colours + shift[..., None]), 0, 255).astype(np.uint8)


def reference_baselines(gray_head: np.ndarray, head_reference: np.ndarray,
                        inpaint_reference: np.ndarray, background: np.ndarray,
                        head_mask: np.ndarray, inpaint_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The blender's inputs without the U-net (uint8 RGB images, gray head H x W 0..255, masks
    H x W): {"recolour": the recoloured head inside M_A^H, I^IR in the ring M_A^I, I_T^BG
    elsewhere; "poisson": the recoloured head Poisson-blended into that ring and background}.
    For Poisson the blank head of the scene is first inpainted from the ring (OpenCV Telea, as
    in ``baselines``): seamlessClone takes its boundary values from the mask's own edge."""
    head, ring = np.asarray(head_mask).astype(bool), np.asarray(inpaint_mask).astype(bool)
    scene = np.where(ring[..., None], inpaint_reference, background).astype(np.uint8)
    recoloured = recolour(gray_head, head_reference)
    filled = cv2.inpaint(scene, head.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return {"recolour": np.where(head[..., None], recoloured, scene),
            "poisson": poisson_clone(recoloured, filled, head)}
