"""DVC stage `train_blender`: the Head2Scene Blender through heser.train.stage.train_stage.

Episodes are pairs of frames of one video (K = 1): the target I_T, and I_T' for the cycle."""

from heser.train.blender import BlenderTask
from heser.train.stage import train_stage
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("train_blender", lambda cfg, args: train_stage(
        cfg, "blender", BlenderTask, cfg.blender.train, 1,
        cfg.path(cfg.paths.models) / "blender.pt", cfg.path(cfg.paths.reports),
        {"blender": cfg.blender.model_dump(mode="json"), "masks": cfg.masks.model_dump()}))
