"""DVC stage `shard`: see heser.preprocess.stages.run_shard."""

from heser.preprocess.stages import run_shard
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("shard", lambda cfg, args: run_shard(cfg))
