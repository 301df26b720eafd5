"""The `evaluate` stage: the aligner alone (reenactment, the paper's Table 2), the whole head
swap beside three baselines, and the stability of a swapped clip, on the identities of one split
(``evaluate.split``, the test identities by default).

Identity is measured with two networks (``IDENTITY_NETWORKS``): E_id ("eid", dlib's ResNet by
default: the swapper's identity input and the aligner's identity loss, so a judge the generator
was trained to please) and FaceRes ("faceres", heser.nets.faceres: trained elsewhere, never in a
loss). For each: the cosine to the sources' identity (the mean of their unit descriptors) and
identity retrieval top-1 (is the nearest identity of the gallery, the mean source descriptor of
every evaluated identity, the source person?) with its chance level beside it; for dlib also
its native Euclidean distance to the sources' mean descriptor and the share under its 0.6
same-person threshold.

Reenactment, I_A against the target frame I_T:
  * same video: K source frames and a held-out target frame of one video (ground truth exists):
    SSIM, PSNR and LPIPS of I_A against I_T, E_ID = 1 - cos of each network's descriptors of
    I_A and I_T, pose and expression error against I_T;
  * cross identity: K frames of one person, the target another: identity to the sources, pose
    and expression error against I_T.
Head swap on the cross-identity pairs, four variants measured alike (``SWAP_GIVEN`` says what
each is given): HeSer's I_B pasted as `heser swap` pastes it; I_A Poisson-pasted and naively
pasted with the same masks (they isolate the blender); the K=1 source head Poisson-pasted (it
isolates the aligner); and the target itself, the scale of identity. Background PSNR is taken
outside the target's dilated head; an identical background (infinite PSNR) is counted, never
capped and averaged in.
Video: the K sources of one identity swapped into ``evaluate.video_frames`` consecutive sampled
frames (crop.video.stride apart) of another identity's video: flicker, identity spread and
landmark jitter, each next to the target clip's own.

Pose and expression errors are landmark-based (heser.metrics); the face backend is run on every
picture alike. An output where it finds no face is counted, not averaged in.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from heser import metrics
from heser.baselines import baselines
from heser.config import Config
from heser.data.kshot import plan_videos
from heser.data.masks import dilate, dilation_radius, fig4_masks, head_mask
from heser.data.shards import INDEX_NAME, decode_sample, read_index, read_tar
from heser.face.cropper import choose_face
from heser.imaging import from_uint8, resize, to_uint8
from heser.io import atomic_path, png_bytes
from heser.nets.faceres import FaceRes, load_faceres
from heser.swap import CropSwap, Swapper, paste_alpha
from heser.tracking import Tracker, run_name


@dataclass(frozen=True)
class Sample:
    key: str
    identity: str
    image: np.ndarray  # uint8 crop at crop.size
    labels: np.ndarray  # uint8 label map
    landmarks: np.ndarray | None = None  # float32 [N, 3] in crop pixels


@dataclass(frozen=True)
class Pair:
    source_keys: tuple[str, ...]
    target_key: str
    same_video: bool


@dataclass(frozen=True)
class Clip:
    source_keys: tuple[str, ...]
    frame_keys: tuple[str, ...]  # consecutive sampled frames of one video


@dataclass
class PairResult:
    """Every number and picture of one pair, and the descriptors retrieval needs."""

    row: dict[str, float]
    pictures: dict[str, np.ndarray]
    source_identity: str
    sources: dict[str, np.ndarray]  # network -> the K sources' descriptors [K, D]
    found: dict[str, dict[str, np.ndarray]]  # result group -> network -> its descriptor [1, D]


# -- data -------------------------------------------------------------------------------------

def plan_pairs(cfg: Config, shard_dir: Path) -> list[Pair]:
    """Same-video episodes (K sources + held-out targets of one video) and cross-identity pairs
    (sources of one person, the target another), drawn with ``evaluate.seed``."""
    e, k = cfg.evaluate, cfg.aligner.k
    rng = np.random.default_rng(e.seed)
    videos = plan_videos(shard_dir, e.split)
    pairs = []
    for video in videos:
        if len(video.keys) < k + 1:
            continue
        keys = [str(key) for key in rng.permutation(list(video.keys))]
        pairs += [Pair(tuple(keys[:k]), target, True)
                  for target in keys[k:k + e.episodes_per_video]]
    frames: dict[str, list[str]] = {}
    for video in videos:
        frames.setdefault(video.identity, []).extend(video.keys)
    ordered = list(permutations(sorted(frames), 2))
    for index in rng.permutation(len(ordered))[:e.cross_pairs]:
        source_id, target_id = ordered[index]
        count = min(k, len(frames[source_id]))
        sources = rng.choice(frames[source_id], count, replace=False)
        pairs.append(Pair(tuple(str(s) for s in sources), str(rng.choice(frames[target_id])),
                          False))
    if not pairs:
        raise ValueError(f"{shard_dir}: the {e.split} split has no identity to evaluate on "
                         f"(it needs a video with {k + 1} frames or two identities)")
    return pairs


def plan_clips(cfg: Config, shard_dir: Path) -> list[Clip]:
    """Up to ``evaluate.video_clips`` clips: ``evaluate.video_frames`` consecutive sampled frames
    of one video and K source frames of another identity, drawn with ``evaluate.seed``."""
    e, k = cfg.evaluate, cfg.aligner.k
    rng = np.random.default_rng([e.seed, 1])  # a stream of its own: the pairs stay as they were
    videos = plan_videos(shard_dir, e.split)
    frames: dict[str, list[str]] = {}
    for video in videos:
        frames.setdefault(video.identity, []).extend(video.keys)
    usable = [v for v in videos if len(v.keys) >= e.video_frames and len(frames) > 1]
    clips = []
    for index in rng.permutation(len(usable))[:e.video_clips]:
        video = usable[index]
        start = int(rng.integers(0, len(video.keys) - e.video_frames + 1))
        others = sorted(set(frames) - {video.identity})
        source_id = others[int(rng.integers(len(others)))]
        count = min(k, len(frames[source_id]))
        sources = rng.choice(frames[source_id], count, replace=False)
        clips.append(Clip(tuple(str(s) for s in sources),
                          tuple(video.keys[start:start + e.video_frames])))
    return clips


def load_samples(shard_dir: Path, split: str, keys: set[str]) -> dict[str, Sample]:
    """The crops and label maps of ``keys``, reading only the split's shards."""
    index = read_index(shard_dir / INDEX_NAME).to_pydict()
    shards = sorted({s for s, sp in zip(index["shard"], index["split"]) if sp == split})
    found: dict[str, Sample] = {}
    for shard in shards:
        for raw in read_tar(shard_dir / shard):
            if raw["__key__"] in keys:
                sample = decode_sample(raw)
                found[sample["key"]] = Sample(sample["key"], sample["meta"]["identity"],
                                              sample["img"], sample["parse"], sample.get("lmk"))
    missing = keys - found.keys()
    if missing:
        raise ValueError(f"{shard_dir}: {len(missing)} samples of the index are missing from "
                         f"the shards (e.g. {sorted(missing)[0]}); rebuild them")
    return found


# -- measurement ------------------------------------------------------------------------------

IDENTITY_NETWORKS = ("eid", "faceres")


class Judge:
    """Identity descriptors of both networks and landmarks of any crop-sized picture."""

    def __init__(self, swapper: Swapper, faceres: FaceRes):
        self.swapper, self.faceres, self.size = swapper, faceres, swapper.cfg.crop.size
        # dlib's same-person distance threshold (0.6); None for an E_id without one (ArcFace)
        self.threshold: float | None = getattr(swapper.identity.net, "distance_threshold", None)

    @torch.no_grad()
    def descriptors(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """{"eid": E_id's descriptors [N, D] (dlib's unnormalised), "faceres": FaceRes's unit
        descriptors [N, 1024]} of same-sized uint8 pictures."""
        batch = torch.cat([from_uint8(image)[None] for image in images])
        eid = self.swapper.identity(batch.to(self.swapper.device)).cpu().numpy()
        return {"eid": eid, "faceres": self.faceres.identity_descriptor(np.stack(images))}

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        faces = self.swapper.backend(resized_rgb(image, self.size))
        if not faces:
            return None
        face = choose_face(faces, None)
        return face.landmarks, face.scheme

    def motion(self, result: np.ndarray, target: np.ndarray,
               wanted: tuple[np.ndarray, str] | None = None) -> dict[str, float]:
        """Pose and expression error of ``result`` against ``target`` (nan: no face found);
        ``wanted``: the target's landmarks when already known."""
        found, wanted = self.landmarks(result), wanted or self.landmarks(target)
        if found is None or wanted is None:
            return {"pose_error_deg": float("nan"), "expression_error": float("nan"),
                    "face_found": float(found is not None)}
        return {"pose_error_deg": metrics.pose_error_deg(wanted[0], found[0]),
                "expression_error": metrics.expression_error(wanted[0], found[0], wanted[1]),
                "face_found": 1.0}

    def identity_row(self, group: str, found: dict[str, np.ndarray],
                     sources: dict[str, np.ndarray]) -> dict[str, float]:
        """``<group>/<net>_cosine`` of one picture's descriptors to the sources' identity, and
        for dlib ``<group>/eid_distance`` to the mean of the sources' descriptors."""
        row = {f"{group}/{net}_cosine": float(metrics.cosine_to_mean(found[net], sources[net])[0])
               for net in IDENTITY_NETWORKS}
        if self.threshold is not None:
            row[f"{group}/eid_distance"] = float(metrics.descriptor_distance(
                found["eid"], sources["eid"].mean(axis=0))[0])
        return row


def resized_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 RGB picture at size x size (bicubic; as it is when already that size)."""
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


# -- one pair ---------------------------------------------------------------------------------

# What each head-swap variant is given (metrics.json "swap_given", report.html).
SWAP_GIVEN = {
    "heser": "HeSer: I_B, the blender's output from I_A (the K sources reenacted into the "
             "target's pose and expression) and the target, pasted back as `heser swap` pastes "
             "it (feathered by swap.feather)",
    "animated_poisson": "the same I_A and the same Fig. 4 masks, no blender: the hole "
                        "dil(M_A^H u M_T^H) inpainted by OpenCV (Telea), I_A's head M_A^H "
                        "Poisson-blended over it (seamlessClone); isolates the blender",
    "animated_paste": "as animated_poisson, I_A's head pasted without blending",
    "source_poisson": "no aligner: the first source crop as it is (its own pose, expression and "
                      "position; K=1), its head M_S^H Poisson-blended into the target whose hole "
                      "dil(M_S^H u M_T^H) is inpainted; isolates the aligner",
    "target": "the target crop itself: a different person's similarity to the sources, the "
              "scale of the identity numbers",
}


def evaluate_pair(swapper: Swapper, judge: Judge, pair: Pair, samples: dict[str, Sample],
                  weights_dir: Path) -> PairResult:
    """Every number and picture of one pair: reenactment (``reenact/*``), and for cross pairs
    the head swap's variants (``<variant>/*``, ``SWAP_GIVEN``)."""
    sources = [samples[key] for key in pair.source_keys]
    target = samples[pair.target_key]
    code = swapper.source_code([s.image for s in sources])
    source_ids = judge.descriptors([s.image for s in sources])
    animated = to_uint8(swapper.animate(code, from_uint8(target.image)[None].to(swapper.device),
                                        target.landmarks))
    found_animated = judge.descriptors([animated])
    row = {f"reenact/{k}": v for k, v in judge.motion(animated, target.image).items()}
    pictures = {"sources": sources[0].image, "target": target.image, "animated": animated}
    result = PairResult(row, pictures, sources[0].identity, source_ids, {})
    if pair.same_video:
        small_target = resized_rgb(target.image, animated.shape[0])
        row["reenact/ssim"] = metrics.ssim(animated, small_target)
        row["reenact/psnr"] = metrics.psnr(animated, small_target)
        row["reenact/lpips"] = metrics.lpips(animated, small_target, weights_dir)
        truth = judge.descriptors([target.image])
        for net in IDENTITY_NETWORKS:  # E_ID against the frame itself
            row[f"reenact/{net}_identity_error"] = float(
                metrics.identity_error(found_animated[net], truth[net])[0])
        return result
    row.update(judge.identity_row("reenact", found_animated, source_ids))
    result.found["reenact"] = found_animated
    _head_swap(swapper, judge, code, sources[0], target, result)
    return result


def _head_swap(swapper: Swapper, judge: Judge, code: torch.Tensor, source: Sample,
               target: Sample, result: PairResult) -> None:
    """The head-swap variants at the crop size, each measured alike, into ``result``."""
    landmarks = judge.landmarks(target.image)
    if landmarks is None:
        result.row["heser/face_found"] = 0.0
        return
    swap = swapper.swap_crop(code, target.image, target.labels, *landmarks)
    variants = swap_variants(swapper.cfg, swap, source, target)
    outside = _outside_target_head(swapper.cfg, target)
    pictures = {**variants, "target": target.image}
    descriptors = judge.descriptors(list(pictures.values()))  # one batch for all
    for index, (name, image) in enumerate(pictures.items()):
        result.found[name] = {net: d[index:index + 1] for net, d in descriptors.items()}
        result.row.update(judge.identity_row(name, result.found[name], result.sources))
        if name != "target":
            result.row.update({f"{name}/{k}": v
                               for k, v in judge.motion(image, target.image, landmarks).items()})
            result.row[f"{name}/background_psnr"] = metrics.psnr(image, target.image, outside)
    result.pictures.update({"inpaint_reference": to_uint8(swap.inpaint_reference),
                            "head_reference": to_uint8(swap.head_reference), **variants})


def pasted_swap(cfg: Config, swap: CropSwap, target: np.ndarray) -> np.ndarray:
    """I_B composited into the target crop exactly as `heser swap` pastes it (so the numbers
    describe what users get), at the crop size."""
    size = target.shape[0]
    alpha = paste_alpha(swap, size, cfg.swap.feather)[..., None]
    blended = to_uint8(resize(swap.blended, size))
    return (alpha * blended + (1 - alpha) * target).round().astype(np.uint8)


def swap_variants(cfg: Config, swap: CropSwap, source: Sample,
                  target: Sample) -> dict[str, np.ndarray]:
    """HeSer's swap and its three baselines for one target crop (``SWAP_GIVEN``), uint8 at
    the crop size."""
    animated = to_uint8(resize(swap.animated, target.image.shape[0]))  # I_A
    pasted = paste_into_target(cfg, animated, swap.animated_labels, target)
    return {"heser": pasted_swap(cfg, swap, target.image), "animated_poisson": pasted["poisson"],
            "animated_paste": pasted["paste"],
            "source_poisson": paste_into_target(cfg, source.image, source.labels,
                                                target)["poisson"]}


def paste_into_target(cfg: Config, head: np.ndarray, head_labels: np.ndarray,
                      target: Sample) -> dict[str, np.ndarray]:
    """The head of ``head`` (its label map's head mask M^H) pasted into the target crop as the
    Fig. 4 masks say: the hole dil(M^H u M_T^H) is blanked and inpainted, then the head is
    pasted naively ("paste") or Poisson-blended ("poisson") (heser.baselines)."""
    masks = fig4_masks(torch.from_numpy(head_labels)[None],
                       torch.from_numpy(target.labels)[None], cfg.masks.dilation)
    hole = 1 - masks.background[0, 0].numpy()
    background = (target.image * (1 - hole[..., None])).astype(np.uint8)
    return baselines(head, background, masks.head_animated[0, 0].numpy(), hole)


def _outside_target_head(cfg: Config, target: Sample) -> np.ndarray:
    """Background: outside the target's dilated head mask dil(M_T^H). A new head that is larger
    than the old one legitimately covers some of it; a blend that bleeds does too."""
    mask = head_mask(torch.from_numpy(target.labels)[None])
    radius = dilation_radius(cfg.masks.dilation, target.labels.shape[-1])
    return dilate(mask, radius)[0, 0].numpy() < 0.5


# -- one clip ---------------------------------------------------------------------------------

def evaluate_clip(swapper: Swapper, judge: Judge, clip: Clip,
                  samples: dict[str, Sample]) -> dict[str, float]:
    """Stability of HeSer's swap over a clip, each number next to the target clip's own:
    flicker inside the region the swap may change (dil(M_A^H u M_T^H) of each frame), the
    spread of FaceRes's cosine to the sources, landmark jitter. Frames where the backend finds
    no face in the target are left out and counted (``frames_without_face``)."""
    sources = [samples[key] for key in clip.source_keys]
    code = swapper.source_code([s.image for s in sources])
    source_ids = judge.descriptors([s.image for s in sources])
    swapped, targets, regions, swapped_marks, target_marks = [], [], [], [], []
    for key in clip.frame_keys:
        target = samples[key]
        landmarks = judge.landmarks(target.image)
        if landmarks is None:
            continue
        swap = swapper.swap_crop(code, target.image, target.labels, *landmarks)
        image = pasted_swap(swapper.cfg, swap, target.image)
        found = judge.landmarks(image)
        swapped.append(image)
        targets.append(target.image)
        regions.append(resize(swap.changed(), target.image.shape[0])[0, 0].cpu().numpy() > 0.5)
        swapped_marks.append(None if found is None else found[0])
        target_marks.append(landmarks[0])
    row = {"frames": float(len(swapped)),
           "frames_without_face": float(len(clip.frame_keys) - len(swapped))}
    if not swapped:
        return row
    cosines = [metrics.cosine_to_mean(judge.descriptors(frames)["faceres"],
                                      source_ids["faceres"]) for frames in (swapped, targets)]
    numbers = metrics.clip_stability(np.stack(swapped), np.stack(targets), np.stack(regions),
                                     swapped_marks, target_marks, *cosines)
    for group, name in (("swapped", "heser"), ("target", "target")):
        row.update({f"{name}/{key}": value for key, value in numbers[group].items()})
    return row


# -- the stage --------------------------------------------------------------------------------

Rows = list[tuple[dict[str, float], bool]]  # (numbers of one pair, is it a same-video pair)


def summarize_group(rows: list[dict[str, float]], prefix: str,
                    threshold: float | None) -> dict[str, float]:
    """{name: mean over the rows} of the ``<prefix>/`` numbers, with ``<name>_dropped`` (nan:
    no face found) where any, ``<name>_identical`` for each PSNR (identical pictures, left out
    of the mean), and dlib's ``eid_same_person_share`` under ``threshold``."""
    out: dict[str, float] = {}
    names = sorted({name for row in rows for name in row if name.startswith(f"{prefix}/")})
    for name in names:
        values = [row.get(name, float("nan")) for row in rows]
        stats = metrics.summarize(values)
        short = name[len(prefix) + 1:]
        out[short] = stats["mean"]
        if stats["dropped"]:
            out[f"{short}_dropped"] = stats["dropped"]
        if short.endswith("psnr"):
            out[f"{short}_identical"] = stats["infinite"]
        if short == "eid_distance" and threshold is not None:
            out["eid_same_person_share"] = metrics.same_person_share(
                [v for v in values if np.isfinite(v)], threshold)
    return out


def identity_retrieval(results: list[PairResult]) -> dict[str, dict[str, float]]:
    """Per result group (reenact, each swap variant, target): identity retrieval top-1 of each
    network, the query being each cross pair's picture labelled with its source person and the
    gallery every identity's mean (unit) source descriptor over all pairs, same-video ones
    included; and the chance level, 1 / identities in the gallery."""
    by_identity: dict[str, dict[str, list[np.ndarray]]] = {}
    for result in results:
        for net in IDENTITY_NETWORKS:
            by_identity.setdefault(net, {}).setdefault(result.source_identity, []).extend(
                result.sources[net])
    galleries = {net: {identity: np.mean([d / np.linalg.norm(d) for d in rows], axis=0)
                       for identity, rows in identities.items()}
                 for net, identities in by_identity.items()}
    groups = sorted({group for result in results for group in result.found})
    out: dict[str, dict[str, float]] = {}
    for group in groups:
        chosen = [r for r in results if group in r.found]
        labels = [r.source_identity for r in chosen]
        for net in IDENTITY_NETWORKS:
            queries = np.concatenate([r.found[group][net] for r in chosen])
            top1, chance = metrics.identity_retrieval_top1(queries, labels, galleries[net])
            out.setdefault(group, {})[f"{net}_retrieval_top1"] = top1
            out[group]["retrieval_chance"] = chance
    return out


def summarize_clips(clip_rows: list[dict[str, float]], frames: int) -> dict[str, Any]:
    """The clips' mean numbers per group (heser, target), how many clips and frames."""
    out: dict[str, Any] = {"clips": len(clip_rows), "frames_per_clip": frames,
                           "frames_without_face": int(sum(r["frames_without_face"]
                                                          for r in clip_rows))}
    for group in ("heser", "target"):
        out[group] = summarize_group(clip_rows, group, None)
    return out


def run_evaluate(cfg: Config) -> dict[str, Any]:
    """Evaluate the trained models; write reports/metrics.json, evaluate_pairs.csv and
    report.html (DVC tracks them: only what a rerun reproduces), the wall-clock time apart in
    reports/timings/evaluate.json, and log the run to MLflow."""
    started = time.perf_counter()
    shard_dir, reports = cfg.path(cfg.paths.shards), cfg.path(cfg.paths.reports)
    weights = cfg.path(cfg.paths.weights)
    swapper = Swapper(cfg)
    judge = Judge(swapper, load_faceres(weights).to(swapper.device))
    pairs, clips = plan_pairs(cfg, shard_dir), plan_clips(cfg, shard_dir)
    keys = ({key for p in pairs for key in (*p.source_keys, p.target_key)}
            | {key for c in clips for key in (*c.source_keys, *c.frame_keys)})
    samples = load_samples(shard_dir, cfg.evaluate.split, keys)
    results = [evaluate_pair(swapper, judge, pair, samples, weights)
               for pair in tqdm(pairs, desc="evaluate", unit="pair", dynamic_ncols=True)]
    clip_rows = [evaluate_clip(swapper, judge, clip, samples)
                 for clip in tqdm(clips, desc="evaluate video", unit="clip", dynamic_ncols=True)]
    same = [r.row for r, p in zip(results, pairs) if p.same_video]
    cross = [r.row for r, p in zip(results, pairs) if not p.same_video]
    retrieval = identity_retrieval(results)  # gallery: every pair's sources
    threshold = judge.threshold
    result = {
        "split": cfg.evaluate.split, "k": cfg.aligner.k,
        "sizes": {"crop": cfg.crop.size, "aligner": cfg.aligner.size,
                  "blender": cfg.blender.size},
        "identity_networks": identity_networks(cfg),
        "reenactment": {
            "same_video": summarize_group(same, "reenact", threshold),
            "cross_identity": {**summarize_group(cross, "reenact", threshold),
                               **retrieval.get("reenact", {})}},
        "swap": {name: {**summarize_group(cross, name, threshold), **retrieval.get(name, {})}
                 for name in SWAP_GIVEN},
        "swap_given": SWAP_GIVEN,
        "video": summarize_clips(clip_rows, cfg.evaluate.video_frames),
        "pairs": {"same_video": len(same), "cross_identity": len(cross)},
    }
    rows = [(r.row, p.same_video) for r, p in zip(results, pairs)]
    grids = [(p, r.pictures) for r, p in zip(results, pairs)]
    write_outputs(reports, result, rows, pairs, grids, cfg.evaluate.report_rows)
    seconds = time.perf_counter() - started
    timings = {"seconds": round(seconds, 1), "seconds_per_pair": round(seconds / len(pairs), 2)}
    write_timings(reports, timings)
    return {**result, **timings, "mlflow_run_id": _track(cfg, result, timings, reports)}


def identity_networks(cfg: Config) -> dict[str, str]:
    """What each identity network of the report is."""
    eid = ("dlib's ResNet (128-d)" if cfg.aligner.identity.backend == "dlib"
           else "ArcFace IR-SE50 (512-d)")
    return {"eid": f"{eid}: the swapper's E_id, whose codes the aligner takes as input and "
                   "whose cosine is its identity loss: the judge the generator was trained to "
                   "please",
            "faceres": "HSE FaceRes (1024-d, heser.nets.faceres): trained elsewhere, never in a "
                       "training loss: the independent judge"}


def _json_safe(tree: Any) -> Any:
    """nan (a mean over nothing) becomes null: JSON has no nan and DVC reads strict JSON."""
    if isinstance(tree, dict):
        return {key: _json_safe(value) for key, value in tree.items()}
    if isinstance(tree, float) and not np.isfinite(tree):
        return None
    return tree


def write_outputs(reports: Path, result: dict[str, Any], rows: Rows, pairs: list[Pair], grids,
                  report_rows: int) -> None:
    with atomic_path(reports / "metrics.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    _write_pairs_csv(reports / "evaluate_pairs.csv", rows, pairs)
    with atomic_path(reports / "report.html") as tmp:
        tmp.write_text(report_html(result, grids, report_rows))


def write_timings(reports: Path, timings: dict[str, Any]) -> None:
    """reports/timings/evaluate.json: wall-clock figures, which DVC does not track (they would
    change dvc.lock on every rerun)."""
    path = reports / "timings" / "evaluate.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(timings, indent=2) + "\n")


def _write_pairs_csv(path: Path, rows: Rows, pairs: list[Pair]) -> None:
    names = sorted({name for row, _ in rows for name in row})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["pair", "kind", "target", *(n.replace("/", "_") for n in names)])
        for number, ((row, same), pair) in enumerate(zip(rows, pairs)):
            writer.writerow([number, "same_video" if same else "cross_identity", pair.target_key,
                             *(_fmt(row.get(name, float("nan"))) for name in names)])


def _fmt(value: float) -> str:
    return "" if not np.isfinite(value) else f"{value:.6g}"


# -- report.html ------------------------------------------------------------------------------

COLUMNS = {
    "same_video": ("sources", "target", "animated"),
    "cross_identity": ("sources", "target", "animated", "inpaint_reference", "head_reference",
                       "heser", "animated_poisson", "animated_paste", "source_poisson"),
}
TITLES = {"sources": "source (1 of K)", "target": "target I_T", "animated": "I_A",
          "inpaint_reference": "I^IR", "head_reference": "I^HR", "heser": "I_B (HeSer)",
          "animated_poisson": "I_A, Poisson", "animated_paste": "I_A, pasted",
          "source_poisson": "source head (K=1), Poisson"}

# The paper's Table 2 (HeSer, one-shot reenactment on VoxCeleb2): (metric, paper's value, our
# same-video key, how ours differs from the paper's definition)
PAPER_TABLE2 = (
    ("E_ID", 0.53, "eid_identity_error",
     "1 - cosine of I_A and I_T under our E_id (dlib's ResNet by default, the network the "
     "aligner is trained against), not the paper's identity network"),
    ("E_ID (FaceRes)", None, "faceres_identity_error",
     "the same with FaceRes, an independent network never used in training"),
    ("E_P", 0.026, "pose_error_deg",
     "the angle in degrees of the relative head rotation fitted to 3-D face-mesh landmarks, "
     "not the paper's distance of pose vectors: other units, not comparable in scale"),
    ("SSIM", 0.77, "ssim", "scikit-image SSIM (7x7 windows, per channel), whole image"),
    ("LPIPS", 0.19, "lpips", "LPIPS v0.1 with AlexNet, whole image"),
    ("PSNR", 31.33, "psnr", "whole image; identical pairs would be counted apart"),
)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "&ndash;"
    return f"{value:.4g}" if isinstance(value, float | int) else html.escape(str(value))


def _data_uri(image: np.ndarray, size: int = 160) -> str:
    png = png_bytes(resized_rgb(image, size))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _table(title: str, groups: dict[str, dict[str, Any]]) -> str:
    """One row per number, one column per group."""
    names = sorted({name for group in groups.values() for name in group})
    head = "".join(f"<th>{html.escape(g)}</th>" for g in groups)
    body = "".join(f"<tr><td>{html.escape(name)}</td>"
                   + "".join(f"<td>{_cell(group.get(name))}</td>" for group in groups.values())
                   + "</tr>" for name in names)
    return f"<h3>{html.escape(title)}</h3><table><tr><th></th>{head}</tr>{body}</table>"


def _paper_table(result: dict[str, Any]) -> str:
    same = result["reenactment"]["same_video"]
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{_cell(paper)}</td>"
                   f"<td>{_cell(same.get(key))}</td><td>{html.escape(how)}</td></tr>"
                   for name, paper, key, how in PAPER_TABLE2)
    common = (f"Ours throughout: I_A against I_T of the same video at {result['sizes']['aligner']}"
              f" px (the paper: 512 px), K={result['k']} source frames (the paper: one-shot), "
              f"{result['pairs']['same_video']} pairs of the sample data's "
              f"{result['split']} split (the paper: the VoxCeleb2 test set).")
    return ("<h3>Beside the paper's Table 2 (one-shot reenactment)</h3><table><tr><th>metric"
            "</th><th>paper</th><th>ours</th><th>how ours differs</th></tr>" + rows
            + f"</table><p>{html.escape(common)}</p>")


def _given(title: str, given: dict[str, str]) -> str:
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                    for k, v in given.items())
    return f"<p>{html.escape(title)}</p><ul>{items}</ul>"


def report_html(result: dict[str, Any], grids, report_rows: int) -> str:
    """One self-contained page (images inline): the metric tables, then one image grid per
    kind of pair. Every picture is a synthetic-media-tagged PNG."""
    video = result["video"]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>heser evaluation</title>",
        "<meta name='generator' content='heser'><meta name='ai-generated' content='true'>",
        "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{display:block}</style>",
        f"<h1>heser evaluation ({html.escape(result['split'])} split, K={result['k']})</h1>",
        "<p>All images below except sources and targets are synthetic (made by heser).</p>",
        _given("Identity networks (eid_*, faceres_*; retrieval chance level beside the top-1):",
               result["identity_networks"]),
        _paper_table(result),
        _table("Reenactment (I_A)", result["reenactment"]),
        _table("Head swap: HeSer, three baselines and the target itself", result["swap"]),
        _given("What each head swap is given:", result["swap_given"]),
        _table(f"Video: {video['clips']} clips of {video['frames_per_clip']} consecutive "
               "sampled frames, HeSer's swap and the target clip itself",
               {"heser": video["heser"], "target": video["target"]}),
    ]
    for kind, columns in COLUMNS.items():
        chosen = [(p, pics) for p, pics in grids
                  if p.same_video == (kind == "same_video") and "target" in pics][:report_rows]
        if not chosen:
            continue
        head = "".join(f"<th>{TITLES[c]}</th>" for c in columns)
        body = "".join("<tr>" + "".join(
            f"<td><img src='{_data_uri(pics[c])}' alt='{c}'></td>" if c in pics else "<td></td>"
            for c in columns) + "</tr>" for _, pics in chosen)
        parts.append(f"<h2>{kind.replace('_', ' ')}</h2><table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts) + "\n"


def _track(cfg: Config, result: dict[str, Any], timings: dict[str, Any], reports: Path) -> str:
    tracker = Tracker("heser-evaluate", run_name("evaluate"),
                      {"evaluate": cfg.evaluate.model_dump(mode="json"), "k": cfg.aligner.k},
                      enabled=True)
    values = {}
    for group in ("reenactment", "swap", "video"):
        for part, summary in result[group].items():
            if isinstance(summary, dict):
                values.update({f"{group}/{part}/{k}": float(v) for k, v in summary.items()
                               if np.isfinite(v)})
            elif np.isfinite(summary):
                values[f"{group}/{part}"] = float(summary)
    values.update({f"timing/{k}": float(v) for k, v in timings.items()})
    tracker.metrics(values, 0)
    for name in ("metrics.json", "evaluate_pairs.csv", "report.html"):
        tracker.artifact(reports / name, "evaluate")
    tracker.end()
    return tracker.run_id

