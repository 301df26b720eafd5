"""Build the configured face backend and parser (the one place that knows every backend)."""

from __future__ import annotations

from pathlib import Path

from heser.config import Config
from heser.face.types import FaceBackend, FaceParser


def make_face_backend(cfg: Config, weights_dir: Path) -> FaceBackend:
    if cfg.crop.backend == "fan":
        from heser.face.fan import FanFace

        return FanFace()
    from heser.face.mediapipe import MediaPipeFace

    return MediaPipeFace(weights_dir, min_score=cfg.crop.min_score)


def make_parser(cfg: Config, weights_dir: Path) -> FaceParser:
    if cfg.parse.backend == "bisenet":
        from heser.face.bisenet import BiSeNetParser

        return BiSeNetParser(cfg.path(cfg.parse.bisenet_checkpoint))
    from heser.face.parse_mediapipe import MediaPipeParser

    return MediaPipeParser(weights_dir, person_threshold=cfg.parse.person_threshold,
                           neck_depth=cfg.parse.neck_depth)
