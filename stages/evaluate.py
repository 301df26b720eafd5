"""DVC stage `evaluate`: reenactment and head-swap metrics on the test identities
(heser.evaluate.run_evaluate): reports/metrics.json, evaluate_pairs.csv, report.html."""

from heser.evaluate import run_evaluate
from stages._entry import run_stage

if __name__ == "__main__":
    run_stage("evaluate", lambda cfg, args: run_evaluate(cfg)["pairs"])
