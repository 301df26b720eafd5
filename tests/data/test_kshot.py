"""K-shot episodes on shards that the preprocessing stages build from real sample files.

Four real videos (two of identity M030) cut to a few frames each and one real photo, sharded
five samples per tar so that videos straddle shard boundaries.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from heser.data import kshot
from heser.data.kshot import KShotEpisodes, plan_videos
from heser.data.shards import decode_sample, read_tar, tar_writer
from heser.face.labels import Region
from heser.imaging import from_uint8
from heser.io import png_bytes
from tests.conftest import make_config, preprocess_sample, write_manifest

FILES = [
    ("videos/mead_M030_front_happy_level3_001.mp4", "M030"),
    ("videos/mead_M030_front_sad_level3_001.mp4", "M030"),
    ("videos/lp_d3_woman_brown_hair.mp4", "woman_brown_hair"),
    ("videos/vr1_young_asian_man_suit.mp4", "man_suit"),
    ("images/st_woman_B_happy1.png", "woman_B"),
]
PHOTO = "woman_B__st_woman_B_happy1"
K = 3


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("kshot")
    cfg = make_config(tmp, **{
        "assets.data_manifest": str(write_manifest(tmp / "manifest.csv", FILES)),
        "crop.video.max_frames": 6, "shard.max_samples_per_shard": 5,
        "shard.split": {"val": 0.0, "test": 0.0},  # every identity in train
    })
    return preprocess_sample(cfg, workers=2)


@pytest.fixture(scope="module")
def usable(shard_dir: Path) -> set[str]:
    videos = plan_videos(shard_dir, "train")
    assert any(len(set(v.shards)) > 1 for v in videos)  # the straddling case is exercised
    return {v.name for v in videos if len(v.keys) > K}


def _episodes(shard_dir: Path, **kwargs) -> list[dict]:
    return list(KShotEpisodes(shard_dir, "train", K, **kwargs))


def _signature(episodes: list[dict]) -> list[tuple]:
    return [(e["target_key"], tuple(e["source_keys"])) for e in episodes]


def test_episodes_are_distinct_frames_of_one_video(shard_dir: Path, usable: set[str]):
    dataset = KShotEpisodes(shard_dir, "train", K, episodes_per_video=3)
    episodes = list(dataset)
    assert len(episodes) == len(dataset) == 3 * len(usable)
    assert Counter(f"{e['identity']}__{e['video']}" for e in episodes) == dict.fromkeys(usable, 3)
    for e in episodes:
        keys = [*e["source_keys"], e["target_key"]]
        assert len(set(keys)) == K + 1
        assert all(key.startswith(f"{e['identity']}__{e['video']}__") for key in keys)
        assert e["sources"].shape == (K, 3, 256, 256) and e["sources"].dtype == torch.float32
        assert e["target"].shape == (3, 256, 256) and e["target"].dtype == torch.float32
        assert e["target_parse"].shape == (256, 256) and e["target_parse"].dtype == torch.uint8
        assert int(e["target_parse"].max()) <= max(Region)
        for image in (e["sources"], e["target"]):
            assert image.min() >= -1 and image.max() <= 1 and image.std() > 0.1


def test_pixels_are_those_of_the_named_samples(shard_dir: Path):
    episode = _episodes(shard_dir)[0]
    samples = {s["key"]: s for tar in sorted(shard_dir.glob("*.tar"))
               for s in map(decode_sample, read_tar(tar))}
    target = samples[episode["target_key"]]
    expected = torch.from_numpy(target["img"].astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert torch.equal(episode["target"], expected)
    assert np.array_equal(episode["target_parse"].numpy(), target["parse"])
    first = samples[episode["source_keys"][0]]
    assert np.array_equal(((episode["sources"][0] + 1) * 127.5).round().byte().permute(1, 2, 0)
                          .numpy(), first["img"])
    assert np.array_equal(episode["source_parse"][0].numpy(), first["parse"])


def test_landmarks_are_the_targets_and_only_when_asked_for(shard_dir: Path):
    assert "target_landmarks" not in _episodes(shard_dir)[0]
    episode = _episodes(shard_dir, landmarks=True)[0]
    target = next(s for tar in sorted(shard_dir.glob("*.tar"))
                  for s in map(decode_sample, read_tar(tar)) if s["key"] == episode["target_key"])
    assert episode["target_landmarks"].dtype == torch.float32
    np.testing.assert_array_equal(episode["target_landmarks"].numpy(), target["lmk"])
    assert episode["target_landmarks"].shape == (468, 3)


def test_short_videos_are_skipped_and_counted(shard_dir: Path, usable: set[str]):
    dataset = KShotEpisodes(shard_dir, "train", K)
    assert [v.name for v in dataset.skipped] == [PHOTO]
    assert {v.name for v in dataset.videos} == usable
    longest = max(len(v.keys) for v in dataset.videos)
    strict = KShotEpisodes(shard_dir, "train", K, min_frames=longest)
    assert len(strict.videos) + len(strict.skipped) == len(usable) + 1
    with pytest.raises(ValueError, match=rf"split 'train' in {shard_dir}.*k={longest}"):
        KShotEpisodes(shard_dir, "train", longest)
    with pytest.raises(ValueError, match="split 'val'"):
        KShotEpisodes(shard_dir, "val", K)  # an empty split
    with pytest.raises(ValueError, match="min_frames"):
        KShotEpisodes(shard_dir, "train", K, min_frames=K)


@pytest.mark.timeout(120)
def test_dataloader_workers_cover_each_video_once(shard_dir: Path, usable: set[str]):
    dataset = KShotEpisodes(shard_dir, "train", K, episodes_per_video=2)
    halves = [{v.name for v in dataset.slot_videos(w, 2)} for w in range(2)]
    assert not halves[0] & halves[1] and halves[0] | halves[1] == usable
    seen = Counter()
    for batch in DataLoader(dataset, batch_size=2, num_workers=2, timeout=60):
        assert batch["sources"].shape[1:] == (K, 3, 256, 256)
        seen.update(f"{i}__{v}" for i, v in zip(batch["identity"], batch["video"]))
    assert seen == dict.fromkeys(usable, 2)


def test_ranks_are_disjoint_and_read_only_their_shards(shard_dir: Path, usable: set[str],
                                                      monkeypatch: pytest.MonkeyPatch):
    read: list[str] = []
    original = kshot.read_tar

    def recording(path: Path):
        read.append(path.name)
        return original(path)

    monkeypatch.setattr(kshot, "read_tar", recording)
    covered: list[set[str]] = []
    for rank in range(2):
        read.clear()
        dataset = KShotEpisodes(shard_dir, "train", K, rank=rank, world_size=2)
        episodes = list(dataset)
        assert len(episodes) == len(dataset)
        covered.append({f"{e['identity']}__{e['video']}" for e in episodes})
        holding = {s for v in dataset.slot_videos() for s in v.shards}
        assert read and set(read) <= holding and len(read) == len(set(read))
    assert not covered[0] & covered[1] and covered[0] | covered[1] == usable


@pytest.mark.timeout(120)
def test_ranks_times_workers_and_empty_slots_end_cleanly(shard_dir: Path, usable: set[str]):
    seen = Counter()
    for rank in range(2):
        dataset = KShotEpisodes(shard_dir, "train", K, rank=rank, world_size=2)
        for e in DataLoader(dataset, batch_size=None, num_workers=2, timeout=60):
            seen[f"{e['identity']}__{e['video']}"] += 1
    assert seen == dict.fromkeys(usable, 1)
    world = len(usable) + 1  # one rank more than there are videos
    counts = [len(_episodes(shard_dir, rank=r, world_size=world)) for r in range(world)]
    assert sorted(counts) == [0] + [1] * len(usable)
    lonely = counts.index(1)  # one video, two workers: one worker has nothing to do
    dataset = KShotEpisodes(shard_dir, "train", K, rank=lonely, world_size=world)
    assert len(list(DataLoader(dataset, batch_size=None, num_workers=2, timeout=60))) == 1


def test_same_seed_and_epoch_give_the_same_episodes(shard_dir: Path):
    first = KShotEpisodes(shard_dir, "train", K, episodes_per_video=2, seed=7)
    again = KShotEpisodes(shard_dir, "train", K, episodes_per_video=2, seed=7)
    epoch0 = _signature(list(first))
    assert _signature(list(again)) == epoch0
    first.set_epoch(1)
    epoch1 = _signature(list(first))
    assert epoch1 != epoch0 and sorted(epoch1) != sorted(epoch0)  # new order and new draws
    first.set_epoch(0)
    assert _signature(list(first)) == epoch0
    other_seed = KShotEpisodes(shard_dir, "train", K, episodes_per_video=2, seed=8)
    assert sorted(_signature(list(other_seed))) != sorted(epoch0)


def test_draws_do_not_depend_on_the_slot_layout(shard_dir: Path):
    alone = _episodes(shard_dir, seed=3)
    split = [e for r in range(2) for e in _episodes(shard_dir, seed=3, rank=r, world_size=2)]
    assert sorted(_signature(split)) == sorted(_signature(alone))


def test_bad_rank_arguments(shard_dir: Path):
    with pytest.raises(ValueError, match="both"):
        KShotEpisodes(shard_dir, "train", K, rank=0)
    with pytest.raises(ValueError, match="outside"):
        KShotEpisodes(shard_dir, "train", K, rank=2, world_size=2)


def test_a_shard_missing_an_indexed_sample_fails_clearly(shard_dir: Path, tmp_path: Path):
    broken = tmp_path / "shards"
    shutil.copytree(shard_dir, broken)
    video = min((v for v in plan_videos(shard_dir, "train") if len(v.keys) > K),
                key=lambda v: len(v.keys))
    lost, tar = video.keys[0], broken / video.shards[0]
    kept = [s for s in read_tar(tar) if s["__key__"] != lost]
    with tar_writer(tar) as writer:
        for sample in kept:
            writer.write(sample)
    k = len(video.keys) - 1  # every frame of the video is drawn, the lost one too
    with pytest.raises(ValueError, match=f"{video.shards[0]} lacks 1 .*{lost}.*rebuild"):
        list(KShotEpisodes(broken, "train", k))


def test_crops_convert_bitwise_as_from_uint8_and_mixed_sizes_fail(shard_dir: Path):
    samples = [s for tar in sorted(shard_dir.glob("*.tar")) for s in read_tar(tar)][:3]
    images = kshot._images(samples)
    expected = torch.stack([from_uint8(decode_sample(s)["img"]) for s in samples])
    assert images.is_contiguous() and torch.equal(images, expected)
    small = {**samples[1], "img.png": png_bytes(decode_sample(samples[1])["img"][:-2])}
    with pytest.raises(ValueError, match=samples[1]["__key__"]):
        kshot._images([samples[0], small])
