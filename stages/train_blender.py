"""DVC stage `train_blender`: the Head2Scene Blender through heser.train.stage.train_stage."""

from heser.train.blender import BlenderTask
from heser.train.stage import train_stage
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage(BlenderTask.model.stage, lambda cfg, args: train_stage(cfg, BlenderTask))
