"""G_B, the Head2Scene Blender (Sec. 3.2): FPN features, the region-restricted colour
references I^HR / I^IR (eq. 4-7), the cycle warps that supervise them (eq. 9-10, 18-19), and
the Blending U-net that draws I_B (eq. 8).

The two cycles: F(I_T) -> A -> F(I_T) reuses the reference the U-net gets; I_T' -> A -> I_T'
draws I_T''s colours onto A through the correspondence of A with the second frame I_T' (another
pose of the same person) and warps them back onto I_T'. Each is compared with the image it left
from (heser.losses.blender_generator_losses)."""

from __future__ import annotations

from torch import Tensor, nn

from heser.config import Blender
from heser.nets.blending_unet import BlendingUNet, blender_input
from heser.nets.correspondence import cycle_back, split_references, warp_with
from heser.nets.fpn import FeaturePyramid


class Head2SceneBlender(nn.Module):
    def __init__(self, cfg: Blender):
        super().__init__()
        f = cfg.fpn
        self.fpn = FeaturePyramid(f.base_channels, f.max_channels, f.levels, f.out_channels)
        self.unet = BlendingUNet(cfg.unet.base_channels, cfg.unet.max_channels)
        self.tau, self.chunk_size = cfg.tau, cfg.chunk_size

    def forward(self, jittered_animated: Tensor, flipped_target: Tensor, regions_animated: Tensor,
                regions_target: Tensor, head_mask: Tensor, background: Tensor,
                inpaint_mask: Tensor, gray_head: Tensor, second_target: Tensor | None = None,
                regions_second: Tensor | None = None, cycle: bool = True) -> dict[str, Tensor]:
        """Inputs as in Fig. 4: C'(I_A), F(I_T) and their region maps at 1/4 resolution
        (heser.nets.correspondence.region_maps), M_A^H, I_T^BG, M_A^I and I_A^GH. With a second
        frame I_T' and its region map (training), also the cycle through it. Inference passes
        ``cycle=False``: the cycle warps only supervise training."""
        f_a, f_t = self.fpn(jittered_animated), self.fpn(flipped_target)
        reference, _ = warp_with(f_a, f_t, regions_animated, regions_target, flipped_target,
                                 self.tau, self.chunk_size)  # I^R, eq. 4-7
        head_ref, inpaint_ref = split_references(reference, regions_animated,
                                                 tuple(jittered_animated.shape[-2:]))  # I^HR, I^IR
        blended = self.unet(blender_input(head_ref, inpaint_ref, head_mask, background,
                                          inpaint_mask, gray_head))  # I_B, eq. 8
        out = {"image": blended, "head_reference": head_ref, "inpaint_reference": inpaint_ref}
        if not cycle:
            return out
        out["cycle"], out["cycle_valid"] = cycle_back(  # F(I_T) -> A -> F(I_T), eq. 9 / 18
            f_a, f_t, regions_animated, regions_target, reference, self.tau, self.chunk_size)
        if second_target is not None:  # I_T' -> A -> I_T', eq. 10 / 19
            f_second = self.fpn(second_target)
            reference_second, _ = warp_with(f_a, f_second, regions_animated, regions_second,
                                            second_target, self.tau, self.chunk_size)
            out["cycle_second"], out["cycle_second_valid"] = cycle_back(
                f_a, f_second, regions_animated, regions_second, reference_second, self.tau,
                self.chunk_size)
        return out
