"""DVC stage `download`: see heser.preprocess.download.run_download."""

from heser.preprocess.download import run_download
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("download", lambda cfg, args: run_download(cfg))
