"""The trainer shared by the aligner and the blender: loop, checkpoints, MLflow, data parallel."""
