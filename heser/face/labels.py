"""The HeSer label set and the one table mapping every parsing backend's classes onto it.

A label map is a uint8 HxW array of these ids. The blender (Sec. 3.2) correlates colours only
within the same region r in {face, hair, eye, nose, lip, tooth, inpainting}; brows count as
face skin there and ears as face (see ``CORRESPONDENCE_REGIONS``). The head groups cover
exactly the head mask M^H: the neck and body belong to the target, and only the part of them
in the inpainting ring takes part.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Region(IntEnum):
    BACKGROUND = 0
    FACE = 1  # face skin, forehead included
    BROW = 2
    EYE = 3
    NOSE = 4
    LIP = 5
    TOOTH = 6  # inner mouth and teeth
    EAR = 7
    HAIR = 8
    NECK = 9
    BODY = 10  # clothes and shoulders
    HAT = 11
    GLASSES = 12


# Regions that make up the head mask M^H of the paper's Fig. 4 (everything the aligner
# re-renders). The neck is not head: it belongs to the target and is inpainted.
HEAD_REGIONS: tuple[Region, ...] = (
    Region.FACE, Region.BROW, Region.EYE, Region.NOSE, Region.LIP, Region.TOOTH,
    Region.EAR, Region.HAIR, Region.HAT, Region.GLASSES,
)

# Head regions of the colour-reference correspondence (eq. 4-7): the head-colour reference I^HR
# is drawn on these labels of I_A from the same group of I_T. Together they are HEAD_REGIONS,
# each label in one group: I^HR is used only inside M_A^H. Background, neck and body take part
# only through the inpainting ring M^I, which the region maps lay over the labels.
CORRESPONDENCE_REGIONS: dict[str, tuple[Region, ...]] = {
    "face": (Region.FACE, Region.BROW, Region.EAR),
    "hair": (Region.HAIR, Region.HAT),
    "eye": (Region.EYE, Region.GLASSES),
    "nose": (Region.NOSE,),
    "lip": (Region.LIP,),
    "tooth": (Region.TOOTH,),
}

# RGB colours for overlays (contact sheet, report grids).
PALETTE = np.array(
    [
        (0, 0, 0), (255, 204, 153), (102, 51, 0), (0, 153, 255), (255, 102, 0),
        (230, 0, 77), (255, 255, 255), (204, 153, 255), (153, 102, 51), (255, 153, 204),
        (0, 153, 76), (255, 255, 0), (0, 255, 255),
    ],
    dtype=np.uint8,
)

# Every backend's classes -> HeSer regions. ``bisenet19`` is the CelebAMask-HQ order used by
# the public face-parsing BiSeNet checkpoints.
BACKEND_CLASSES: dict[str, dict[str, Region]] = {
    "bisenet19": {
        "background": Region.BACKGROUND, "skin": Region.FACE, "l_brow": Region.BROW,
        "r_brow": Region.BROW, "l_eye": Region.EYE, "r_eye": Region.EYE,
        "eye_g": Region.GLASSES, "l_ear": Region.EAR, "r_ear": Region.EAR,
        "ear_r": Region.EAR,  # earring: part of the ear region, re-rendered with the head
        "nose": Region.NOSE, "mouth": Region.TOOTH, "u_lip": Region.LIP, "l_lip": Region.LIP,
        "neck": Region.NECK, "neck_l": Region.BODY,  # necklace: worn on the target's body
        "cloth": Region.BODY, "hair": Region.HAIR, "hat": Region.HAT,
    },
    # The offline MediaPipe parser draws HeSer regions directly; its table is the identity.
    "mediapipe": {region.name.lower(): region for region in Region},
}


def lookup_table(backend: str) -> np.ndarray:
    """A uint8 array ``lut`` with ``lut[backend_class_index] = HeSer region``.

    The backend's class order is the insertion order of its entry in ``BACKEND_CLASSES``.
    """
    try:
        classes = BACKEND_CLASSES[backend]
    except KeyError:
        raise KeyError(f"no label table for parser backend {backend!r}; "
                       f"known: {sorted(BACKEND_CLASSES)}") from None
    return np.array([int(region) for region in classes.values()], dtype=np.uint8)


def colorize(label_map: np.ndarray) -> np.ndarray:
    """RGB picture of a label map."""
    return PALETTE[np.clip(label_map, 0, len(PALETTE) - 1)]


def overlay(rgb: np.ndarray, label_map: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop with its label map blended on top (background left untouched)."""
    colour = colorize(label_map).astype(np.float32)
    out = rgb.astype(np.float32)
    fg = label_map > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colour[fg]
    return out.round().astype(np.uint8)
