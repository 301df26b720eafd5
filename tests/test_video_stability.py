"""Video stability from files, on a real sample clip: a "swap" that is the target itself
measures exactly as the target; frames without a face are left out and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heser.data.video_io import VideoWriter, probe_video, read_frames
from heser.face.cropper import Cropper
from heser.video_stability import stability_summary, video_stability
from tests.conftest import make_config, read_rgb, sample_path

CLIP = "videos/mead_M030_front_happy_level3_001.mp4"
SOURCE = "images/st_woman_B_happy1.png"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 real frames with a face, then 1 grey frame without one."""
    out = tmp_path_factory.mktemp("clip") / "clip.mp4"
    meta = probe_video(sample_path(CLIP))
    with VideoWriter(out, meta.rate, meta.width, meta.height) as writer:
        for index, rgb in enumerate(read_frames(sample_path(CLIP))):
            writer.write(rgb if index < 4 else np.full_like(rgb, 128))
            if index == 4:
                break
    return out


def test_the_target_as_its_own_swap_measures_as_the_target(clip: Path, tmp_path: Path,
                                                            weights_dir: Path, face_backend):
    cfg = make_config(tmp_path, **{"paths.weights": str(weights_dir)})
    source = Cropper(face_backend, cfg.crop).crop_photo(read_rgb(SOURCE), SOURCE).image
    numbers = video_stability(cfg, clip, clip, [source])
    assert (numbers["frames"], numbers["frames_without_face"]) == (4, 1)
    assert numbers["swapped"] == numbers["target"]
    assert set(numbers["target"]) == {"flicker", "identity_spread", "faceres_cosine",
                                      "landmark_jitter", "face_found"}
    assert all(np.isfinite(v) for v in numbers["target"].values())
    assert numbers["target"]["flicker"] > 0  # the head moves between real frames
    assert video_stability(cfg, clip, clip, [source], max_frames=2)["frames"] == 2
    text = stability_summary(numbers)
    assert "4 frames (1 without a face left out)" in text
    flicker = numbers["target"]["flicker"]
    assert f"flicker: {flicker:.4g} (target's own: {flicker:.4g})" in text
