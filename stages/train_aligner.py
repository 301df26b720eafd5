"""DVC stage `train_aligner`: the Head2Head Aligner through heser.train.stage.train_stage."""

from heser.train.aligner import AlignerTask
from heser.train.stage import train_stage
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("train_aligner", lambda cfg, args: train_stage(
        cfg, "aligner", AlignerTask, cfg.aligner.train, cfg.aligner.k,
        cfg.path(cfg.paths.models) / "aligner.pt", cfg.path(cfg.paths.reports),
        {"aligner": cfg.aligner.model_dump(mode="json")}))
