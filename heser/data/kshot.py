"""K-shot episodes for the Head2Head Aligner's self-reconstruction training (Sec. 3.1).

An episode is K+1 distinct frames of ONE video: K sources I_S^1..I_S^K and a target I_T,
which the aligner must rebuild from the sources' identity and the target's pose/expression.

The plan comes from ``index.parquet`` alone (which videos, their frames, which shards hold
them); the tars are only read sequentially. Work is split into *slots*, one per (rank,
DataLoader worker): the split's videos, in the order they were written, are rotated by a
per-epoch offset and cut into contiguous runs, first one run per rank (so ranks differ by at
most one video), then one per worker. A contiguous run of videos lies in a run of consecutive
shards, so a slot reads only the shards that hold its videos, and no two slots share a video.

A slot reads its shards in order, keeps the raw bytes of just the frames its episodes use, and
emits the episodes of every video whose last shard it has read, shuffled, before reading on:
memory holds one shard's worth of a slot's video group at a time.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
import pyarrow.compute as pc
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from heser.data.shards import INDEX_NAME, read_index, read_tar
from heser.io import decode_npy, decode_png

T = TypeVar("T")


@dataclass(frozen=True)
class Video:
    """One video of the index: its sample keys in frame order and the shard of each."""

    identity: str
    video: str
    keys: tuple[str, ...]
    shards: tuple[str, ...]  # shards[i] holds keys[i]

    @property
    def name(self) -> str:
        return f"{self.identity}__{self.video}"


@dataclass(frozen=True)
class Episode:
    video: Video
    source_keys: tuple[str, ...]
    target_key: str


def plan_videos(shard_dir: Path, split: str) -> list[Video]:
    """The split's videos from the index, in the order the shard stage wrote them."""
    index = read_index(Path(shard_dir) / INDEX_NAME)
    rows = index.filter(pc.equal(index["split"], split)).select(
        ["key", "identity", "video", "frame", "shard"]).to_pydict()
    frames: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
    for key, identity, video, frame, shard in zip(*rows.values()):
        frames.setdefault((identity, video), []).append((frame, key, shard))
    videos = []
    for (identity, video), items in frames.items():  # dicts keep first-seen (write) order
        items.sort()
        videos.append(Video(identity, video, tuple(k for _, k, _ in items),
                            tuple(s for _, _, s in items)))
    return videos


def chunk(items: Sequence[T], part: int, parts: int) -> Sequence[T]:
    """Run ``part`` of ``items`` cut into ``parts`` contiguous runs whose sizes differ by <= 1."""
    n = len(items)
    return items[part * n // parts:(part + 1) * n // parts]


def _stable_id(text: str) -> int:
    """A hash that is the same in every process (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit rank/world size, else torch.distributed's when initialised, else (0, 1)."""
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


# heser.imaging.from_uint8's arithmetic on each of the 256 uint8 values: looking pixels up here
# gives bitwise its floats in one pass, with no float temporaries
_UNIT_OF_UINT8 = torch.arange(256, dtype=torch.float32).div_(127.5).sub_(1.0).numpy()


def _images(samples: list[dict[str, bytes]]) -> torch.Tensor:
    """PNG crops -> float32 [N, 3, H, W] in [-1, 1], as from_uint8 gives them.

    Each decoded crop is split into channel planes and looked up (cv2.LUT) straight into one
    tensor: from_uint8 per crop and a stack cost as much again as the decoding at 512 px
    (bench/kshot_loader.py)."""
    first = decode_png(samples[0]["img.png"])
    out = torch.empty(len(samples), 3, *first.shape[:2])
    planes = out.numpy()
    for i, sample in enumerate(samples):
        rgb = first if i == 0 else decode_png(sample["img.png"])
        if rgb.shape != first.shape:
            raise ValueError(f"crop {sample['__key__']} is {rgb.shape}, the episode's first "
                             f"{samples[0]['__key__']} is {first.shape}: rebuild the shards")
        for channel, plane in enumerate(cv2.split(rgb)):
            cv2.LUT(plane, _UNIT_OF_UINT8, dst=planes[i, channel])
    return out


def _labels(samples: list[dict[str, bytes]]) -> torch.Tensor:
    """PNG label maps -> uint8 [N, H, W]."""
    return torch.from_numpy(np.stack([decode_png(sample["parse.png"]) for sample in samples]))


def _landmarks(sample: dict[str, bytes]) -> torch.Tensor:
    """The crop's landmarks, float32 [N, 2|3] in crop pixels."""
    if "lmk.npy" not in sample:
        raise ValueError(f"sample {sample['__key__']} has no landmarks (lmk.npy); rebuild the "
                         "shards")
    return torch.from_numpy(decode_npy(sample["lmk.npy"]).astype(np.float32))


class KShotEpisodes(IterableDataset):
    """Episodes of K sources + 1 target from one video each, for self-reconstruction.

    Each pass yields ``episodes_per_video`` episodes of every usable video of this rank (a video
    with at least ``min_frames`` frames; default k+1), as dicts: ``sources`` float32
    [K, 3, H, W] and ``target`` float32 [3, H, W] in [-1, 1], ``target_parse`` uint8 [H, W],
    ``source_parse`` uint8 [K, H, W] (the blender's second target I_T' needs its regions),
    ``source_keys``, ``target_key``, ``identity``, ``video``; with ``landmarks``, also
    ``target_landmarks`` float32 [N, 3] (crop pixels: the aligner's landmark motion input).

    Call ``set_epoch(epoch)`` before each pass: (seed, epoch) fixes which slot gets which
    videos, the frame draws and the order. The epoch reaches DataLoader workers only when they
    are started, i.e. on each ``iter(loader)`` unless ``persistent_workers=True``. ``rank`` and
    ``world_size`` default to torch.distributed's at construction (after init_process_group).
    """

    def __init__(self, shard_dir: Path, split: str, k: int, episodes_per_video: int = 1,
                 seed: int = 0, min_frames: int | None = None, rank: int | None = None,
                 world_size: int | None = None, landmarks: bool = False) -> None:
        super().__init__()
        self.landmarks = landmarks
        min_frames = k + 1 if min_frames is None else min_frames
        if k < 1 or episodes_per_video < 1:
            raise ValueError(f"k ({k}) and episodes_per_video ({episodes_per_video}) must be >= 1")
        if min_frames < k + 1:
            raise ValueError(f"min_frames ({min_frames}) must be >= k + 1 ({k + 1}): an episode "
                             "draws k + 1 distinct frames")
        self.shard_dir = Path(shard_dir)
        self.k, self.episodes_per_video, self.seed, self.epoch = k, episodes_per_video, seed, 0
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        planned = plan_videos(self.shard_dir, split)
        self.videos = tuple(v for v in planned if len(v.keys) >= min_frames)
        self.skipped = tuple(v for v in planned if len(v.keys) < min_frames)
        if not self.videos:
            most = max((len(v.keys) for v in planned), default=0)
            raise ValueError(
                f"no video of split {split!r} in {self.shard_dir} has the {min_frames} frames "
                f"k={k} needs ({len(planned)} videos, the longest has {most} frames)")

    def set_epoch(self, epoch: int) -> None:
        """Select pass ``epoch``'s slot rotation, frame draws and order (cf. DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Episodes this rank yields per pass (summed over its workers).

        Ranks differ by at most ``episodes_per_video``; a DDP loop that needs every rank to take
        the same number of steps should stop at the smallest rank's count.
        """
        return len(chunk(self.videos, self.rank, self.world_size)) * self.episodes_per_video

    def slot_videos(self, worker: int = 0, num_workers: int = 1) -> Sequence[Video]:
        """The videos that DataLoader worker ``worker`` of this rank covers in this epoch."""
        offset = int(np.random.default_rng([self.seed, self.epoch]).integers(len(self.videos)))
        rotated = self.videos[offset:] + self.videos[:offset]
        return chunk(chunk(rotated, self.rank, self.world_size), worker, num_workers)

    def draw(self, video: Video) -> list[Episode]:
        """This epoch's episodes of ``video``: K+1 frames without replacement, last = target.

        Seeded by (seed, epoch, video) alone, so the draws do not depend on the slot layout.
        """
        rng = np.random.default_rng([self.seed, self.epoch, _stable_id(video.name)])
        episodes = []
        for _ in range(self.episodes_per_video):
            keys = [video.keys[i] for i in rng.choice(len(video.keys), self.k + 1, replace=False)]
            episodes.append(Episode(video, tuple(keys[:-1]), keys[-1]))
        return episodes

    def __iter__(self) -> Iterator[dict[str, object]]:
        info = get_worker_info()
        videos = self.slot_videos(info.id, info.num_workers) if info else self.slot_videos()
        yield from self._stream(videos)

    def _stream(self, videos: Sequence[Video]) -> Iterator[dict[str, object]]:
        """Read the slot's shards once, in order; after each, emit the videos it completed."""
        order = list(dict.fromkeys(s for video in videos for s in video.shards))
        position = {shard: i for i, shard in enumerate(order)}
        wanted: dict[str, set[str]] = defaultdict(set)  # shard -> keys the episodes use
        done_after: dict[str, list[Video]] = defaultdict(list)  # shard -> videos it completes
        episodes = {video.name: self.draw(video) for video in videos}
        for video in videos:
            shard_of = dict(zip(video.keys, video.shards))
            for episode in episodes[video.name]:
                for key in (*episode.source_keys, episode.target_key):
                    wanted[shard_of[key]].add(key)
            done_after[max(video.shards, key=position.__getitem__)].append(video)
        raw: dict[str, dict[str, bytes]] = {}
        for shard in order:
            raw.update(self._collect(shard, wanted[shard]))
            ready = [e for video in done_after[shard] for e in episodes[video.name]]
            rng = np.random.default_rng([self.seed, self.epoch, _stable_id(shard)])
            for i in rng.permutation(len(ready)):
                yield self._decode(ready[i], raw)
            for episode in ready:
                for key in (*episode.source_keys, episode.target_key):
                    raw.pop(key, None)

    def _collect(self, shard: str, keys: set[str]) -> dict[str, dict[str, bytes]]:
        """The samples ``keys`` of one shard, reading it only as far as the last of them."""
        found: dict[str, dict[str, bytes]] = {}
        if keys:
            for sample in read_tar(self.shard_dir / shard):
                if sample["__key__"] in keys:
                    found[sample["__key__"]] = sample
                    if len(found) == len(keys):
                        break
        if len(found) < len(keys):
            missing = sorted(keys - found.keys())
            raise ValueError(f"{self.shard_dir / shard} lacks {len(missing)} of the samples "
                             f"{INDEX_NAME} lists (e.g. {missing[0]}); rebuild the shards")
        return found

    def _decode(self, episode: Episode, raw: dict[str, dict[str, bytes]]) -> dict[str, object]:
        sources, target = [raw[key] for key in episode.source_keys], [raw[episode.target_key]]
        extra = {"target_landmarks": _landmarks(target[0])} if self.landmarks else {}
        return {**extra,
            "sources": _images(sources),
            "target": _images(target)[0],
            "target_parse": _labels(target)[0],
            "source_parse": _labels(sources),
            "source_keys": list(episode.source_keys),
            "target_key": episode.target_key,
            "identity": episode.video.identity,
            "video": episode.video.video,
        }
