"""Head-swap baselines without a learned blender, for the blender's validation and `evaluate`.

The hole (the head and the ring around it) is first filled by OpenCV's inpainting, then the
head is pasted as it is ("paste") or with OpenCV's Poisson blending, seamlessClone ("poisson").
"""

from __future__ import annotations

import cv2
import numpy as np


def baselines(head: np.ndarray, background: np.ndarray, head_mask: np.ndarray,
              hole: np.ndarray) -> dict[str, np.ndarray]:
    """``head`` pasted into ``background`` (uint8 RGB, same size) where ``head_mask`` is set,
    after ``hole`` is inpainted: {"paste": ..., "poisson": ...}."""
    filled = cv2.inpaint(background, hole.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    mask = head_mask.astype(bool)
    paste = np.where(mask[..., None], head, filled)
    clone_mask = (mask * 255).astype(np.uint8)
    clone_mask[[0, -1], :] = 0  # seamlessClone needs the mask off the border
    clone_mask[:, [0, -1]] = 0
    ys, xs = np.nonzero(clone_mask)
    if len(xs) == 0:
        return {"paste": paste, "poisson": paste}
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    center = (int((x0 + x1 + 1) // 2), int((y0 + y1 + 1) // 2))
    poisson = cv2.seamlessClone(head, filled, clone_mask, center, cv2.NORMAL_CLONE)
    return {"paste": paste, "poisson": poisson}
