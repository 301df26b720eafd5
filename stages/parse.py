"""DVC stage `parse`: see heser.preprocess.stages.run_parse."""

from heser.preprocess.stages import run_parse
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("parse", lambda cfg, args: run_parse(cfg, args.workers), workers=True)
