"""Per-item preprocessing steps shared by the DVC stages (stages/) and the Prefect flow
(pipelines/): crop one video or photo, parse one video's crops, shard everything."""
