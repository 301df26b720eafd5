"""DVC stage `train_aligner`: the Head2Head Aligner through heser.train.stage.train_stage."""

from heser.train.aligner import AlignerTask
from heser.train.stage import train_stage
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage(AlignerTask.model.stage, lambda cfg, args: train_stage(cfg, AlignerTask))
