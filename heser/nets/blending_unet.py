"""The blending U-net of the Head2Scene Blender (Sec. 3.2, Appendix B).

It paints the blended image I_B from the colour references and masks, concatenated channel-wise
by ``blender_input``. Seven levels (six halvings): level i works at 1/2^i of the input. The
encoder descends with residual downsampling blocks; the decoder climbs back with a residual
block per level on the upsampled features concatenated with the encoder's skip at that level.

Spectral norm on every convolution, as in the rest of HeSer's GANs; group norm (per sample) in
the residual blocks, so that a data-parallel split computes what the whole batch does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heser.nets.blocks import ResDown, channel_ladder, conv1x1, conv3x3, group_norm

# (name, channels) in the paper's concatenation order (Sec. 3.2)
BLENDER_INPUTS: tuple[tuple[str, int], ...] = (
    ("head_reference", 3),  # I^HR: the target's (I_T's) colours warped onto I_A's head
    ("inpaint_reference", 3),  # I^IR: the inpainting reference, the scene's colours
    ("head_mask", 1),  # M_A^H: where the aligned head goes
    ("background", 3),  # I_T^BG: the target with head and inpainting region removed
    ("inpaint_mask", 1),  # M_A^I: the region between the old and new head to inpaint
    ("gray_head", 1),  # I_A^GH: the aligned head in grayscale, its shading and detail
)
BLENDER_IN_CHANNELS = sum(channels for _, channels in BLENDER_INPUTS)


def blender_input(head_reference: Tensor, inpaint_reference: Tensor, head_mask: Tensor,
                  background: Tensor, inpaint_mask: Tensor, gray_head: Tensor) -> Tensor:
    """[I^HR, I^IR, M_A^H, I_T^BG, M_A^I, I_A^GH] -> [B, 12, H, W] in that channel order
    (images 3 channels in [-1, 1], masks and the grayscale head 1 channel each)."""
    tensors = (head_reference, inpaint_reference, head_mask, background, inpaint_mask, gray_head)
    reference = head_reference.shape
    for (name, channels), tensor in zip(BLENDER_INPUTS, tensors):
        expected = (reference[0], channels, *reference[2:])
        if tensor.dim() != 4 or tuple(tensor.shape) != expected:
            raise ValueError(f"blender input {name} has shape {tuple(tensor.shape)}, "
                             f"expected {expected}")
    return torch.cat(tensors, dim=1)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GN-ReLU-conv) x 2, with a 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.norm2 = group_norm(cin), group_norm(cout)
        self.conv1, self.conv2 = conv3x3(cin, cout), conv3x3(cout, cout)
        self.skip = conv1x1(cin, cout) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(h))) + self.skip(x)


class BlendingUNet(nn.Module):
    """``blender_input(...)`` [B, 12, H, W] -> I_B [B, 3, H, W] in [-1, 1] (eq. 8);
    H and W divisible by 2^(levels - 1)."""

    def __init__(self, base_channels: int, max_channels: int, levels: int = 7):
        super().__init__()
        if levels < 2:
            raise ValueError(f"a U-net needs at least two levels, got {levels}")
        widths = channel_ladder(base_channels, max_channels, levels)
        self.levels = levels
        self.stem = nn.Sequential(conv3x3(BLENDER_IN_CHANNELS, widths[0]),
                                  ResBlock(widths[0], widths[0]))
        self.down = nn.ModuleList(ResDown(cin, cout) for cin, cout in zip(widths[:-1], widths[1:]))
        # up[i] merges level i + 1 (upsampled) with the skip of level i, finest first
        self.up = nn.ModuleList(ResBlock(coarse + fine, fine)
                                for fine, coarse in zip(widths[:-1], widths[1:]))
        self.to_rgb = nn.Sequential(group_norm(widths[0]), nn.ReLU(), conv3x3(widths[0], 3))

    def forward(self, x: Tensor) -> Tensor:
        factor = 2 ** (self.levels - 1)
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"blending U-net input {tuple(x.shape[-2:])} is not divisible by "
                             f"{factor} (2^(levels - 1) for {self.levels} levels)")
        if x.shape[1] != BLENDER_IN_CHANNELS:
            raise ValueError(f"blending U-net takes {BLENDER_IN_CHANNELS} channels "
                             f"(blender_input), got {x.shape[1]}")
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        h = skips.pop()
        for block, skip in zip(self.up[::-1], skips[::-1]):
            h = block(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), skip], 1))
        return torch.tanh(self.to_rgb(h))
