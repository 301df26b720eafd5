"""The aligner's learnability check: the small-set overfit test the field runs before scaling.

Train the aligner on a few identities of the sample (every frame of their videos but the last
``holdout`` share, which is held out), then reenact each person's K sources into held-out
frames of every person, and ask:

* does I_A keep the sources' identity when the driver is someone else? Retrieval top-1 among
  the trained identities by FaceRes (an identity network the training never sees; dlib, the
  identity loss's own network, beside it, labelled so), with the chance level and the share
  that retrieves the *driver* (identity leaking through E_pose/E_exp);
* does I_A follow the driver? Its head-pose error against the driver beside the one against
  its own sources, and its mouth opening against the driver's;
* how much does I_A change when only the sources change, and when only the driver does?
* same-video reenactment of held-out frames: L1, SSIM, LPIPS;
* does I_A follow a head roll? A held-out driver of the person's own video, turned in the
  image plane both ways, drives its sources (``roll_following``: no identity in play);
* does I_A open its mouth when the driver does? The held-out frames of the person's own video
  with the most closed and the most open mouth drive its sources (``mouth_following``: no
  identity in play);
* do the drivers' head pose and expression alone tell who they are? (``landmark_person_top1``:
  if so, no motion input that carries the pose can be kept free of identity on these clips.)

``bench/learnability.py`` is the entry point (MLflow, reports); this module is the library.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from heser import metrics
from heser.data.augment import similarity_points, warp_similarity
from heser.data.shards import INDEX_NAME, read_index, write_index
from heser.evaluate import Sample, load_samples, resized_rgb
from heser.face.cropper import choose_face
from heser.face.motion import SCHEME_OF_SIZE, motion_features
from heser.face.types import FaceBackend
from heser.imaging import from_uint8, resize, tile_grid, to_uint8
from heser.nets.faceres import FaceRes
from heser.train.aligner import AlignerTask

# Four training identities of the sample: two MEAD studio actors with many frames, an HDTF
# interview and a LivePortrait driving clip (glasses, curly hair).
DEFAULT_IDENTITIES = ("mead_W009", "mead_M030", "hdtf_aoc", "lp_d12_asian_man_curly_glasses")
TRAIN, HELD_OUT = "train", "val"  # the split names the subset's index uses
ROLL_DEG = 8.0  # the roll test's in-plane turn each way: A's default rotation range
# mediapipe468: inner-lip midpoints (upper, lower) and the outer eye corners
_INNER_LIPS, _EYE_CORNERS = (13, 14), (33, 263)


def subset_shards(shard_dir: Path, identities: tuple[str, ...], holdout: float,
                  out_dir: Path) -> dict[str, int]:
    """An index in ``out_dir`` over the train-split frames of ``identities`` alone, with the
    last ``holdout`` share of each video's frames (at least one) as split ``val``; the shards
    are linked, not copied. Returns frames per split."""
    table = read_index(shard_dir / INDEX_NAME).to_pylist()
    rows = [r for r in table if r["identity"] in identities and r["split"] == "train"]
    missing = sorted(set(identities) - {r["identity"] for r in rows})
    if missing:
        raise ValueError(f"{shard_dir / INDEX_NAME}: no train-split frames of {missing}; pick "
                         "identities of the train split")
    videos: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        videos[(row["identity"], row["video"])].append(row)
    counts = {TRAIN: 0, HELD_OUT: 0}
    for frames in videos.values():
        frames.sort(key=lambda r: r["frame"])
        held = max(1, math.ceil(holdout * len(frames))) if len(frames) > 1 else 0
        for i, row in enumerate(frames):
            row["split"] = HELD_OUT if i >= len(frames) - held else TRAIN
            counts[row["split"]] += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    write_index(rows, out_dir / INDEX_NAME)
    for shard in {r["shard"] for r in rows}:
        link = out_dir / shard
        if not link.exists():
            link.symlink_to((shard_dir / shard).resolve())
    return counts


@dataclass(frozen=True)
class Person:
    """One identity of the check: K source frames, drivers (held-out frames of its longest
    video, the sources' video) and a gallery of its training frames for retrieval."""

    identity: str
    sources: list[Sample]
    drivers: list[Sample]
    gallery: list[Sample]
    # the held-out frames of the same video with the most closed and the most open mouth (by
    # the shards' landmarks), for the mouth test; None without two usable frames
    mouth_pair: tuple[Sample, Sample] | None = None


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i)] for i in np.linspace(0, len(items) - 1, count)]


def load_people(subset_dir: Path, identities: tuple[str, ...], k: int, drivers: int,
                gallery: int) -> list[Person]:
    """The sources, drivers and gallery of each identity, from the subset's index."""
    index = read_index(subset_dir / INDEX_NAME).to_pylist()
    plan: dict[str, Person] = {}
    keys: dict[str, set[str]] = {TRAIN: set(), HELD_OUT: set()}
    chosen: dict[str, tuple[list[str], list[str], list[str]]] = {}
    every_held: dict[str, list[str]] = {}
    for identity in identities:
        rows = sorted((r for r in index if r["identity"] == identity),
                      key=lambda r: (r["video"], r["frame"]))
        by_video: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_video[row["video"]].append(row)
        video = max(by_video, key=lambda v: len(by_video[v]))
        train = [r["key"] for r in by_video[video] if r["split"] == TRAIN]
        held = [r["key"] for r in by_video[video] if r["split"] == HELD_OUT]
        if len(train) < k or not held:
            raise ValueError(f"{identity}: its longest video {video} has {len(train)} training "
                             f"and {len(held)} held-out frames; the check needs k={k} and 1")
        every_train = [r["key"] for r in rows if r["split"] == TRAIN]
        chosen[identity] = (_spread(train, k), _spread(held, drivers),
                            _spread(every_train, gallery))
        keys[TRAIN] |= set(chosen[identity][0]) | set(chosen[identity][2])
        keys[HELD_OUT] |= set(chosen[identity][1])
        keys[HELD_OUT] |= set(held)  # the mouth test picks among all of them
        every_held[identity] = held
    samples = {**load_samples(subset_dir, TRAIN, keys[TRAIN]),
               **load_samples(subset_dir, HELD_OUT, keys[HELD_OUT])}
    for identity, (sources, held, shown) in chosen.items():
        plan[identity] = Person(identity, [samples[k] for k in sources],
                                [samples[k] for k in held], [samples[k] for k in shown],
                                mouth_pair([samples[k] for k in every_held[identity]]))
    return list(plan.values())


def mouth_pair(frames: list[Sample]) -> tuple[Sample, Sample] | None:
    """The frames with the most closed and the most open mouth by their own landmarks; None
    when fewer than two have a measurable mouth or none opens wider than another."""
    opening = [(mouth_opening(s.landmarks, SCHEME_OF_SIZE.get(len(s.landmarks), "")), s)
               for s in frames if s.landmarks is not None]
    usable = sorted((o for o in opening if np.isfinite(o[0])), key=lambda o: o[0])
    if len(usable) < 2 or usable[-1][0] <= usable[0][0]:
        return None
    return usable[0][1], usable[-1][1]


def _tensor(samples: list[Sample]) -> torch.Tensor:
    return torch.stack([from_uint8(s.image) for s in samples])


def _driven(task: AlignerTask, person: Person, people: list[Person]) -> dict:
    """The aligner's inputs for ``person``'s sources driven by every person's held-out frames
    (unaugmented pose path)."""
    drivers = torch.cat([_tensor(p.drivers) for p in people])
    sources = _tensor(person.sources)
    batch = {"sources": sources.expand(len(drivers), *sources.shape), "target": drivers,
             "target_key": [s.key for p in people for s in p.drivers]}
    marks = [s.landmarks for p in people for s in p.drivers]
    if all(m is not None for m in marks):
        batch["target_landmarks"] = torch.from_numpy(np.stack(marks))
    return task.prepare(batch, 0, augment=False)


@torch.no_grad()
def reenact(task: AlignerTask, people: list[Person]) -> torch.Tensor:
    """I_A [P, P * D, 3, S, S] in [-1, 1]: person p's sources driven by every person's D
    held-out frames, in the order of ``people`` (row p, column q * D + d)."""
    rows = []
    task.generator.eval()
    try:
        for person in people:
            inputs = _driven(task, person, people)
            rows.append(task.fake(inputs, task.generator)["image"].float().cpu())
    finally:
        task.generator.train()
    return torch.stack(rows)


@torch.no_grad()
def code_spread(task: AlignerTask, people: list[Person]) -> dict[str, float]:
    """Whether the codes can reach the renderer at all: e_por's spread over the people (std
    over people, mean over features) beside its size (mean |e_por|); e_pose's and e_exp's
    spread over a person's own drivers as the MLP sees them (unit-scale features, so 1 is as
    much as the features differ from each other); and the AdaIN parameters' spread over the
    drivers (for each person's sources, then averaged) beside their size. AdaIN scales by
    (1 + parameter), so a spread of 0.001 moves nothing."""
    g = task.generator
    g.eval()
    try:
        portraits, spreads, sizes, motion, first = [], [], [], [], 0
        for person in people:
            inputs = _driven(task, person, people)
            code = g.source_code(inputs["sources"][:1], inputs["identity_codes"][:1])
            portraits.append(code[0, :g.code_dims[0]])
            codes = g.mlp_input(code.expand(len(inputs["target"]), -1), inputs["driver"])
            own = slice(first, first + len(person.drivers))  # _driven's columns of ``person``
            first += len(person.drivers)
            motion.append([float(block[own].std(dim=0).mean())
                           for block in codes.split(g.code_dims, dim=1)[2:]])
            adain = g.mlp(codes)
            spreads.append(float(adain.std(dim=0).mean()))
            sizes.append(float(adain.abs().mean()))
    finally:
        g.train()
    portrait = torch.stack(portraits)
    pose, expression = np.mean(motion, axis=0)
    return {"portrait_code_spread": float(portrait.std(dim=0).mean()),
            "portrait_code_size": float(portrait.abs().mean()),
            "pose_code_spread_own_drivers": float(pose),
            "expression_code_spread_own_drivers": float(expression),
            "adain_spread_over_drivers": float(np.mean(spreads)),
            "adain_size": float(np.mean(sizes))}


def landmark_person_top1(people: list[Person]) -> dict[str, float]:
    """How well a driver's landmark motion features (heser.face.motion) alone name its person:
    each held-out driver against the mean features of every person's gallery (features
    standardised over the galleries), nearest-centroid top-1, with its chance level. Near 1,
    the clips' head pose and expression tell who is who, so any motion input that carries the
    driver's pose can carry its identity too, whatever bottleneck it passes. nan when a
    frame has no landmarks."""
    def features(samples: list[Sample]) -> np.ndarray | None:
        if any(s.landmarks is None for s in samples):
            return None
        return np.stack([motion_features(s.landmarks, s.image.shape[0]) for s in samples])

    galleries = [features(p.gallery) for p in people]
    drivers = [features(p.drivers) for p in people]
    chance = 1 / len(people)
    if any(f is None or not len(f) for f in galleries + drivers):
        return {"landmark_person_top1": float("nan"), "landmark_person_chance": chance}
    every = np.concatenate(galleries)
    mean, std = every.mean(0), every.std(0) + 1e-6
    centroids = np.stack([((g - mean) / std).mean(0) for g in galleries])
    hits = [int(np.argmin(np.linalg.norm((d - mean) / std - centroids, axis=1))) == i
            for i, found in enumerate(drivers) for d in found]
    return {"landmark_person_top1": float(np.mean(hits)), "landmark_person_chance": chance}


def sensitivities(animated: torch.Tensor) -> dict[str, float]:
    """Mean |change of I_A| ([-1, 1] units) when only the sources change (same driver, other
    person's sources) and when only the driver changes (same sources, another driver)."""
    people, drivers = animated.shape[:2]
    by_source = [(animated[a] - animated[b]).abs().mean().item()
                 for a in range(people) for b in range(a + 1, people)]
    by_driver = [(animated[:, a] - animated[:, b]).abs().mean().item()
                 for a in range(drivers) for b in range(a + 1, drivers)]
    return {"change_sources_only": float(np.mean(by_source)),
            "change_driver_only": float(np.mean(by_driver))}


class Landmarks:
    """3-D landmarks of crop-sized pictures (None: no face), by the crop stage's backend."""

    def __init__(self, backend: FaceBackend, size: int):
        self.backend, self.size = backend, size

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        faces = self.backend(resized_rgb(image, self.size))
        if not faces:
            return None
        face = choose_face(faces, None)
        return face.landmarks, face.scheme


def mouth_opening(landmarks: np.ndarray, scheme: str) -> float:
    """Inner-lip gap over the outer-eye-corner distance (mediapipe468 only; nan otherwise)."""
    if scheme != "mediapipe468":
        return float("nan")
    (upper, lower), (left, right) = _INNER_LIPS, _EYE_CORNERS
    gap = np.linalg.norm(landmarks[upper, :2] - landmarks[lower, :2])
    return float(gap / np.linalg.norm(landmarks[left, :2] - landmarks[right, :2]))


def _animate_own(task: AlignerTask, person: Person, picture: torch.Tensor,
                 marks: torch.Tensor | None, key: str) -> torch.Tensor:
    """I_A [1, 3, S, S] of ``person``'s sources driven by ``picture`` [1, 3, H, W] (its
    landmarks [1, N, 3] or None), unaugmented."""
    batch = {"sources": _tensor(person.sources)[None], "target": picture, "target_key": [key]}
    if marks is not None:
        batch["target_landmarks"] = marks
    inputs = task.prepare(batch, 0, augment=False)
    return task.fake(inputs, task.generator)["image"].float().cpu()


def _following(task: AlignerTask, pairs: list[tuple[Person, list]], landmarks: Landmarks,
               apart: Callable[[tuple, tuple], float]
               ) -> tuple[float, float, float, np.ndarray | None]:
    """Each person's sources driven by both drivers of its pair (two (picture [1, 3, H, W],
    landmarks [1, N, 3] or None, key) of the person's own video, so no identity is in play),
    with ``apart`` measured on landmarks found by ``landmarks``: its mean between the two
    drivers (every pair whose drivers are found), its mean between the two I_A, and the
    ratio of the two over the same pairs (a pair where any of the four faces is missed is
    left out of the I_A mean and the ratio, so the ratio compares like with like); and the
    picture (None without pairs): a row per person of the two drivers, then the two I_A."""
    given, paired, rows = [], [], []
    task.generator.eval()
    try:
        for person, drivers in pairs:
            pictures = [picture for picture, _, _ in drivers]
            animated = [_animate_own(task, person, *driver) for driver in drivers]
            crop = pictures[0].shape[-1]
            found_drivers = [landmarks(to_uint8(p[0])) for p in pictures]
            found_animated = [landmarks(resized_rgb(to_uint8(a[0]), crop)) for a in animated]
            if None not in found_drivers:
                given.append(apart(*found_drivers))
                if None not in found_animated:
                    paired.append((given[-1], apart(*found_animated)))
            size = animated[0].shape[-1]
            rows.append([resize(p, size) for p in pictures] + animated)
    finally:
        task.generator.train()
    grid = tile_grid([torch.cat(column) for column in zip(*rows)], len(rows)) if rows else None
    both = np.array(paired, np.float64).reshape(-1, 2)
    ratio = float(both[:, 1].mean() / both[:, 0].mean()) if len(both) else float("nan")
    followed = float(both[:, 1].mean()) if len(both) else float("nan")
    return float(np.mean(given or [np.nan])), followed, ratio, grid


@torch.no_grad()
def roll_following(task: AlignerTask, people: list[Person], landmarks: Landmarks,
                   roll_deg: float = ROLL_DEG) -> tuple[dict[str, float], np.ndarray]:
    """Does I_A follow a head roll? Each person's first held-out driver turned in the image
    plane by -roll_deg and by +roll_deg (the picture and its landmarks alike) drives that
    person's own sources, so no identity is in play: the rotation between the two I_A
    (``roll_followed_deg``, from landmarks found on them) beside the one between the two
    turned drivers found the same way (``roll_given_deg``, about 2 * roll_deg).
    ``roll_following`` is their ratio: 1 follows the roll, 0 ignores it. The picture: a row
    per person of the two turned drivers, then the two I_A."""
    pairs = []
    for person in people:
        driver = person.drivers[0]
        image = from_uint8(driver.image)[None]
        turned = []
        for sign in (-1.0, 1.0):
            angle = torch.tensor([sign * roll_deg])
            scale, shift = torch.ones(1), torch.zeros(1, 2)
            marks = (None if driver.landmarks is None else
                     similarity_points(torch.from_numpy(driver.landmarks)[None], angle, scale,
                                       shift, *image.shape[-2:]))
            turned.append((warp_similarity(image, angle, scale, shift), marks, driver.key))
        pairs.append((person, turned))
    given, followed, ratio, picture = _following(
        task, pairs, landmarks, lambda a, b: metrics.pose_error_deg(a[0], b[0]))
    return ({"roll_given_deg": given, "roll_followed_deg": followed,
             "roll_following": ratio}, picture)


@torch.no_grad()
def mouth_following(task: AlignerTask, people: list[Person], landmarks: Landmarks
                    ) -> tuple[dict[str, float], np.ndarray | None]:
    """Does I_A open its mouth when the driver does? Each person's ``mouth_pair`` (held-out
    frames of its own video, mouth most closed and most open) drives that person's own
    sources, so no identity is in play: how much wider I_A's mouth is with the open driver
    than with the closed one (``mouth_followed``, inner-lip gap over the eye-corner distance,
    from landmarks found on I_A) beside the same for the two drivers (``mouth_given``).
    ``mouth_following`` is their ratio: 1 follows the mouth, 0 ignores it (negative: opens
    it the other way). The picture: a row per person of the closed and the open driver, then
    the two I_A. nan (and no picture) when no person has a pair."""
    pairs = [(person, [(from_uint8(s.image)[None],
                        None if s.landmarks is None else torch.from_numpy(s.landmarks)[None],
                        s.key) for s in person.mouth_pair])
             for person in people if person.mouth_pair is not None]
    given, followed, ratio, picture = _following(
        task, pairs, landmarks, lambda a, b: mouth_opening(*b) - mouth_opening(*a))
    return ({"mouth_given": given, "mouth_followed": followed, "mouth_following": ratio},
            picture)


def _retrieval(descriptors: np.ndarray, people: list[Person], galleries: dict[str, np.ndarray],
               same: np.ndarray) -> dict[str, float]:
    """Top-1 of the sources' identity over cross pairs (row person != driver person) and over
    same-person pairs, and the share of cross pairs that retrieve the driver instead."""
    names = [p.identity for p in people]
    n_people, n_columns = same.shape
    drivers_per = n_columns // n_people
    flat = descriptors.reshape(n_people * n_columns, -1)
    own = [names[r] for r in range(n_people) for _ in range(n_columns)]
    driver = [names[c // drivers_per] for _ in range(n_people) for c in range(n_columns)]
    cross = np.flatnonzero(~same.reshape(-1))
    alike = np.flatnonzero(same.reshape(-1))
    gallery = {name: galleries[name] for name in names}

    def top1(rows: np.ndarray, wanted: list[str]) -> tuple[float, float]:
        return metrics.identity_retrieval_top1(flat[rows], [wanted[i] for i in rows], gallery)

    (cross_top1, chance), (same_top1, _) = top1(cross, own), top1(alike, own)
    return {"cross_top1": cross_top1, "same_top1": same_top1,
            "cross_driver_share": top1(cross, driver)[0], "chance": chance}


def measure(task: AlignerTask, people: list[Person], faceres: FaceRes, landmarks: Landmarks,
            lpips_weights: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The check's figures (see the module docstring) and its pictures: ``grid`` (the cross
    reenactment), ``roll`` (the roll test) and ``mouth`` (the mouth test, when a person has a
    mouth pair)."""
    animated = reenact(task, people)
    n_people, n_columns = animated.shape[:2]
    drivers_per = n_columns // n_people
    same = np.array([[c // drivers_per == r for c in range(n_columns)] for r in range(n_people)])
    crop = people[0].drivers[0].image.shape[0]
    pictures = np.stack([resized_rgb(to_uint8(image), crop) for image in animated.flatten(0, 1)])
    result: dict[str, float] = {"people": n_people, "drivers_per_person": drivers_per}
    result.update(sensitivities(animated))
    galleries = {p.identity: faceres.identity_descriptor(np.stack([s.image for s in p.gallery]))
                 .mean(0) for p in people}
    found = faceres.identity_descriptor(pictures)
    result.update({f"faceres_{k}": v for k, v in _retrieval(found, people, galleries,
                                                            same).items()})
    eid = task.identity
    with torch.no_grad():
        eid_gallery = {p.identity: eid(_tensor(p.gallery).to(task.device)).mean(0).cpu().numpy()
                       for p in people}
        eid_found = eid(animated.flatten(0, 1).to(task.device)).cpu().numpy()
    result.update({f"eid_{k}": v for k, v in _retrieval(eid_found, people, eid_gallery,
                                                        same).items() if k != "chance"})
    result.update(_motion(pictures.reshape(n_people, n_columns, *pictures.shape[1:]), people,
                          same, landmarks))
    result.update(resolution_floor(people, animated.shape[-1], landmarks))
    result.update(_same_video(animated, people, same, lpips_weights))
    result["same_video_l1_source_average"] = source_average_l1(people, animated.shape[-1])
    result.update(code_spread(task, people))
    result.update(landmark_person_top1(people))
    roll, roll_picture = roll_following(task, people, landmarks)
    mouth, mouth_picture = mouth_following(task, people, landmarks)
    result.update(roll)
    result.update(mouth)
    pictures = {"grid": _grid(animated, people), "roll": roll_picture}
    if mouth_picture is not None:
        pictures["mouth"] = mouth_picture
    return result, pictures


def source_average_l1(people: list[Person], size: int) -> float:
    """The no-motion baseline of same-video reenactment, given what I_A is given: L1 of each
    held-out driver against the pixel mean of its person's K sources, both at ``size``. An
    I_A that ignores the driver and draws the sources' average frame scores this."""
    errors = []
    for person in people:
        average = resize(_tensor(person.sources), size).mean(dim=0, keepdim=True)
        drivers = resize(_tensor(person.drivers), size)
        errors.append((drivers - average).abs().mean(dim=(1, 2, 3)))
    return float(torch.cat(errors).mean())


def resolution_floor(people: list[Person], size: int, landmarks: Landmarks
                     ) -> dict[str, float]:
    """Each driver against itself after a round trip through the aligner's resolution (down to
    ``size``, back up to the crop): the lowest pose and expression error against the driver
    that any I_A of this size can score with this landmark detector."""
    pose, expression = [], []
    for driver in (s for p in people for s in p.drivers):
        crop = driver.image.shape[0]
        found = landmarks(driver.image)
        coarse = landmarks(resized_rgb(resized_rgb(driver.image, size), crop))
        if found is None or coarse is None:
            continue
        pose.append(metrics.pose_error_deg(found[0], coarse[0]))
        expression.append(metrics.expression_error(found[0], coarse[0]))
    return {"pose_error_floor_deg": float(np.mean(pose or [np.nan])),
            "expression_error_floor": float(np.mean(expression or [np.nan]))}


def _motion(pictures: np.ndarray, people: list[Person], same: np.ndarray,
            landmarks: Landmarks) -> dict[str, float]:
    """Over cross pairs: head-pose error of I_A against its driver and against its own sources
    (mean over the K), expression error likewise, and the correlation of I_A's mouth opening
    with the driver's; ``face_found``: share of I_A where the backend found a face. Beside
    them, the same errors between the driver itself and the sources (``*_driver_to_sources``):
    what an I_A that followed the driver exactly would score against the sources, so how far
    apart the two are to begin with."""
    drivers = [landmarks(s.image) for p in people for s in p.drivers]
    sources = [[landmarks(s.image) for s in p.sources] for p in people]
    pose_driver, pose_source, exp_driver, exp_source, mouths, found = [], [], [], [], [], []
    pose_apart, exp_apart = [], []
    for r, row in enumerate(pictures):
        for c, picture in enumerate(row):
            if same[r, c]:
                continue
            got, wanted = landmarks(picture), drivers[c]
            found.append(got is not None)
            if got is None or wanted is None:
                continue
            own = [s for s in sources[r] if s is not None]
            pose_driver.append(metrics.pose_error_deg(wanted[0], got[0]))
            exp_driver.append(metrics.expression_error(wanted[0], got[0]))
            pose_source.append(np.mean([metrics.pose_error_deg(s[0], got[0]) for s in own]))
            exp_source.append(np.mean([metrics.expression_error(s[0], got[0]) for s in own]))
            pose_apart.append(np.mean([metrics.pose_error_deg(s[0], wanted[0]) for s in own]))
            exp_apart.append(np.mean([metrics.expression_error(s[0], wanted[0]) for s in own]))
            mouths.append((mouth_opening(*wanted), mouth_opening(*got)))
    mouth = np.array(mouths, np.float64).reshape(-1, 2)
    usable = mouth[np.isfinite(mouth).all(1)]
    correlation = (float(np.corrcoef(usable.T)[0, 1])
                   if len(usable) > 2 and usable.std(0).min() > 0 else float("nan"))
    return {"face_found": float(np.mean(found)),
            "pose_error_to_driver_deg": float(np.mean(pose_driver or [np.nan])),
            "pose_error_to_sources_deg": float(np.mean(pose_source or [np.nan])),
            "expression_error_to_driver": float(np.mean(exp_driver or [np.nan])),
            "expression_error_to_sources": float(np.mean(exp_source or [np.nan])),
            "pose_error_driver_to_sources_deg": float(np.mean(pose_apart or [np.nan])),
            "expression_error_driver_to_sources": float(np.mean(exp_apart or [np.nan])),
            "mouth_opening_correlation": correlation}


def _same_video(animated: torch.Tensor, people: list[Person], same: np.ndarray,
                lpips_weights: Path) -> dict[str, float]:
    """Same-person pairs: the sources and the held-out driver are frames of one video, so the
    driver is the ground truth. L1 ([-1, 1] units), SSIM and LPIPS (AlexNet)."""
    results, truths = [], []
    for r, person in enumerate(people):
        columns = np.flatnonzero(same[r])
        results += [animated[r, c] for c in columns]
        truths += [from_uint8(s.image) for s in person.drivers]
    size = animated.shape[-1]
    fake, real = torch.stack(results), resize(torch.stack(truths), size)
    net = metrics.lpips_network(lpips_weights)
    to_np = [to_uint8(x) for x in fake], [to_uint8(x) for x in real]
    return {"same_video_l1": float((fake - real).abs().mean()),
            "same_video_ssim": float(np.mean([metrics.ssim(a, b) for a, b in zip(*to_np)])),
            "same_video_lpips": float(net(fake, real).mean())}


def _grid(animated: torch.Tensor, people: list[Person]) -> np.ndarray:
    """Header row: the drivers; then per person: its first source, then I_A per driver."""
    size = animated.shape[-1]
    drivers = resize(torch.cat([_tensor(p.drivers) for p in people]), size)
    first = resize(torch.stack([from_uint8(p.sources[0].image) for p in people]), size)
    blank = torch.full((1, 3, size, size), -1.0)
    columns = [torch.cat([blank, first])]
    columns += [torch.cat([drivers[c:c + 1], animated[:, c]]) for c in range(len(drivers))]
    return tile_grid(columns, len(people) + 1)
