"""DVC stage `download`: see heser.preprocess.stages.run_download."""

from heser.preprocess.stages import run_download
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("download", lambda cfg, args: run_download(cfg))
