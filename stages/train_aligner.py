"""DVC stage `train_aligner`: see heser.train.run_aligner.train_aligner."""

from heser.train.run_aligner import train_aligner
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("train_aligner", lambda cfg, args: train_aligner(
        cfg, cfg.path(cfg.paths.models) / "aligner.pt", cfg.path(cfg.paths.reports)))
