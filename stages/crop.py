"""DVC stage `crop`: see heser.preprocess.stages.run_crop."""

from heser.preprocess.stages import run_crop
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("crop", lambda cfg, args: run_crop(cfg, args.workers), workers=True)
