"""The `evaluate` stage: the aligner alone (reenactment, the paper's Table 2) and the whole head
swap, on the identities of one split (``evaluate.split``, the test identities by default).

Reenactment, I_A against the target frame I_T:
  * same video: K source frames and a held-out target frame of one video (ground truth exists):
    SSIM and PSNR of I_A against I_T, E_ID = 1 - cos(E_id(I_A), E_id(I_T)), pose and expression
    error against I_T;
  * cross identity: K frames of one person, the target another person: E_ID against the mean
    of the sources' identity codes, pose and expression error against I_T.
Head swap, I_B on cross-identity pairs: identity similarity cos(E_id(I_B), sources) (with the
target's own similarity to the sources for scale), pose and expression error against I_T,
background PSNR outside the changed region, and the same numbers for a baseline that pastes
the K=1 source head with Poisson blending (OpenCV's seamlessClone).

Pose and expression errors are landmark-based (heser.metrics); the face backend is run on I_A,
I_B and I_T alike. An output where it finds no face is counted, not averaged in. LPIPS needs
ImageNet backbone weights that cannot be obtained offline: it is reported as unavailable.
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
from heser.data.masks import dilate, dilation_radius, head_mask
from heser.data.shards import INDEX_NAME, decode_sample, read_index, read_tar
from heser.face.cropper import choose_face
from heser.imaging import from_uint8, resize, to_uint8
from heser.io import atomic_path, png_bytes
from heser.swap import Swapper, paste_alpha

LPIPS_NOTE = ("unavailable: LPIPS needs torchvision's ImageNet AlexNet/VGG weights and the LPIPS "
              "linear layers, which cannot be obtained offline")


@dataclass(frozen=True)
class Sample:
    key: str
    identity: str
    image: np.ndarray  # uint8 crop at crop.size
    labels: np.ndarray  # uint8 label map


@dataclass(frozen=True)
class Pair:
    source_keys: tuple[str, ...]
    target_key: str
    same_video: bool


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
                                              sample["img"], sample["parse"])
    missing = keys - found.keys()
    if missing:
        raise ValueError(f"{shard_dir}: {len(missing)} samples of the index are missing from "
                         f"the shards (e.g. {sorted(missing)[0]}); rebuild them")
    return found


# -- measurement ------------------------------------------------------------------------------

class Judge:
    """Identity codes and landmarks of any crop-sized picture, with the swapper's networks."""

    def __init__(self, swapper: Swapper):
        self.swapper, self.size = swapper, swapper.cfg.crop.size

    @torch.no_grad()
    def identity(self, images: list[np.ndarray]) -> np.ndarray:
        batch = torch.cat([from_uint8(image)[None].to(self.swapper.device) for image in images])
        return self.swapper.identity(batch).cpu().numpy()

    def landmarks(self, image: np.ndarray) -> tuple[np.ndarray, str] | None:
        faces = self.swapper.backend(_resized(image, self.size))
        if not faces:
            return None
        face = choose_face(faces, None)
        return face.landmarks, face.scheme

    def motion(self, result: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Pose and expression error of ``result`` against ``target`` (nan: no face found)."""
        found, wanted = self.landmarks(result), self.landmarks(target)
        if found is None or wanted is None:
            return {"pose_error_deg": float("nan"), "expression_error": float("nan"),
                    "face_found": float(found is not None)}
        return {"pose_error_deg": metrics.pose_error_deg(wanted[0], found[0]),
                "expression_error": metrics.expression_error(wanted[0], found[0], wanted[1]),
                "face_found": 1.0}


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))


def _identity_similarity(judge: Judge, image: np.ndarray, reference: np.ndarray) -> float:
    return float(1 - metrics.identity_error(judge.identity([image]), reference[None])[0])


# -- one pair ---------------------------------------------------------------------------------

def evaluate_pair(swapper: Swapper, judge: Judge, pair: Pair,
                  samples: dict[str, Sample]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Every number and picture of one pair: reenactment (``reenact/*``), and for cross pairs
    the head swap (``swap/*``) and its Poisson baseline (``poisson/*``)."""
    sources = [samples[key] for key in pair.source_keys]
    target = samples[pair.target_key]
    code = swapper.source_code([s.image for s in sources])
    source_identity = judge.identity([s.image for s in sources]).mean(0)
    animated = to_uint8(swapper.animate(code, from_uint8(target.image)[None].to(swapper.device)))
    small_target = _resized(target.image, animated.shape[0])
    row = {f"reenact/{k}": v for k, v in judge.motion(animated, target.image).items()}
    pictures = {"sources": sources[0].image, "target": target.image, "animated": animated}
    if pair.same_video:
        row["reenact/ssim"] = metrics.ssim(animated, small_target)
        row["reenact/psnr"] = metrics.psnr(animated, small_target)
        reference = judge.identity([target.image])[0]
    else:
        reference = source_identity
    row["reenact/identity_error"] = 1 - _identity_similarity(judge, animated, reference)
    if not pair.same_video:
        swap_row, swap_pictures = _head_swap(swapper, judge, code, sources, target,
                                             source_identity)
        row.update(swap_row)
        pictures.update(swap_pictures)
    return row, pictures


def _head_swap(swapper: Swapper, judge: Judge, code: torch.Tensor, sources: list[Sample],
               target: Sample, source_identity: np.ndarray
               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """I_B composited into the target crop exactly as `heser swap` pastes it (so the numbers
    describe what users get), against the Poisson baseline, both at the crop size."""
    cfg = swapper.cfg
    landmarks = judge.landmarks(target.image)
    if landmarks is None:
        return {"swap/face_found": 0.0}, {}
    swap = swapper.swap_crop(code, target.image, target.labels, *landmarks)
    size = target.image.shape[0]
    alpha = paste_alpha(swap, size, cfg.swap.feather)[..., None]
    blended = to_uint8(resize(swap.blended, size))
    composite = (alpha * blended + (1 - alpha) * target.image).round().astype(np.uint8)
    poisson = _poisson_baseline(cfg, sources[0], target)
    outside = _outside_target_head(cfg, target)
    row = {"swap/target_identity_similarity": _identity_similarity(judge, target.image,
                                                                   source_identity)}
    for name, image in (("swap", composite), ("poisson", poisson)):
        row[f"{name}/identity_similarity"] = _identity_similarity(judge, image, source_identity)
        row.update({f"{name}/{k}": v for k, v in judge.motion(image, target.image).items()})
        row[f"{name}/background_psnr"] = min(metrics.psnr(image, target.image, outside),
                                             metrics.MAX_PSNR)
    pictures = {"inpaint_reference": to_uint8(swap.inpaint_reference),
                "head_reference": to_uint8(swap.head_reference), "blended": composite,
                "poisson": poisson}
    return row, pictures


def _outside_target_head(cfg: Config, target: Sample) -> np.ndarray:
    """Background: outside the target's dilated head mask dil(M_T^H). A new head that is larger
    than the old one legitimately covers some of it; a blend that bleeds does too."""
    mask = head_mask(torch.from_numpy(target.labels)[None])
    radius = dilation_radius(cfg.masks.dilation, target.labels.shape[-1])
    return dilate(mask, radius)[0, 0].numpy() < 0.5


def _poisson_baseline(cfg: Config, source: Sample, target: Sample) -> np.ndarray:
    """The K=1 source head (its crop, no reenactment) Poisson-blended into the target; the
    target's hole dil(M_S^H u M_T^H) is inpainted first (heser.baselines)."""
    size = target.image.shape[0]
    labels = torch.from_numpy(np.stack([source.labels, target.labels]))
    masks = head_mask(labels)
    union = dilate(torch.maximum(masks[:1], masks[1:]), dilation_radius(cfg.masks.dilation, size))
    hole = union[0, 0].numpy()
    background = (target.image * (1 - hole[..., None])).astype(np.uint8)
    return baselines(source.image, background, masks[0, 0].numpy(), hole)["poisson"]


# -- the stage --------------------------------------------------------------------------------

Rows = list[tuple[dict[str, float], bool]]  # (numbers of one pair, is it a same-video pair)


def summarize_rows(rows: Rows, same_video: bool) -> dict[str, dict[str, float]]:
    chosen = [row for row, same in rows if same == same_video]
    names = sorted({name for row in chosen for name in row})
    return {name: metrics.summarize([row.get(name, float("nan")) for row in chosen])
            for name in names}


def run_evaluate(cfg: Config) -> dict[str, Any]:
    """Evaluate the trained models; write reports/metrics.json, evaluate_pairs.csv and
    report.html (DVC tracks them: only what a rerun reproduces), the wall-clock time apart in
    reports/timings/evaluate.json, and log the run to MLflow."""
    started = time.perf_counter()
    shard_dir, reports = cfg.path(cfg.paths.shards), cfg.path(cfg.paths.reports)
    swapper = Swapper(cfg)
    judge = Judge(swapper)
    pairs = plan_pairs(cfg, shard_dir)
    samples = load_samples(shard_dir, cfg.evaluate.split,
                           {key for p in pairs for key in (*p.source_keys, p.target_key)})
    rows, grids = [], []
    for pair in tqdm(pairs, desc="evaluate", unit="pair", dynamic_ncols=True):
        row, pictures = evaluate_pair(swapper, judge, pair, samples)
        rows.append((row, pair.same_video))
        grids.append((pair, pictures))
    result = {
        "split": cfg.evaluate.split, "k": cfg.aligner.k,
        "reenactment": {"same_video": _means(summarize_rows(rows, True), "reenact/"),
                        "cross_identity": _means(summarize_rows(rows, False), "reenact/")},
        "swap": {"heser": _means(summarize_rows(rows, False), "swap/"),
                 "poisson_k1": _means(summarize_rows(rows, False), "poisson/")},
        "lpips": LPIPS_NOTE,
        "pairs": {"same_video": sum(same for _, same in rows),
                  "cross_identity": sum(not same for _, same in rows)},
    }
    write_outputs(reports, result, rows, pairs, grids, cfg.evaluate.report_rows)
    seconds = time.perf_counter() - started
    timings = {"seconds": round(seconds, 1), "seconds_per_pair": round(seconds / len(pairs), 2)}
    write_timings(reports, timings)
    return {**result, **timings, "mlflow_run_id": _track(cfg, result, timings, reports)}


def _means(summary: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """{name: mean} of one group, plus how many values each mean stands on and how many were
    dropped (no face found)."""
    out: dict[str, float] = {}
    for name, stats in summary.items():
        if name.startswith(prefix):
            short = name[len(prefix):]
            out[short] = stats["mean"]
            if stats.get("dropped"):
                out[f"{short}_dropped"] = stats["dropped"]
    return out


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
                       "blended", "poisson"),
}
TITLES = {"sources": "source (1 of K)", "target": "target I_T", "animated": "I_A",
          "inpaint_reference": "I^IR", "head_reference": "I^HR", "blended": "I_B (HeSer)",
          "poisson": "Poisson, K=1"}


def _data_uri(image: np.ndarray, size: int = 160) -> str:
    png = png_bytes(_resized(image, size))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _table(title: str, summary: dict[str, float]) -> str:
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4g}</td></tr>"
                    for k, v in summary.items() if isinstance(v, float | int))
    return f"<h3>{html.escape(title)}</h3><table>{cells}</table>"


def report_html(result: dict[str, Any], grids, report_rows: int) -> str:
    """One self-contained page (images inline): the metric tables, then one image grid per
    kind of pair. Every picture is a synthetic-media-tagged PNG."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>heser evaluation</title>",
        "<meta name='generator' content='heser'><meta name='ai-generated' content='true'>",
        "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px}img{display:block}</style>",
        f"<h1>heser evaluation ({html.escape(result['split'])} split, K={result['k']})</h1>",
        "<p>All images below except sources and targets are synthetic (made by heser).</p>",
        f"<p>LPIPS: {html.escape(result['lpips'])}</p>",
        _table("Reenactment, same video (I_A vs I_T)", result["reenactment"]["same_video"]),
        _table("Reenactment, cross identity", result["reenactment"]["cross_identity"]),
        _table("Head swap, HeSer", result["swap"]["heser"]),
        _table("Head swap, Poisson baseline (K=1 source head)", result["swap"]["poisson_k1"]),
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
    from heser.train.tracking import Tracker  # MLflow logging; it lives with the trainer's

    tracker = Tracker("heser-evaluate", "evaluate",
                      {"evaluate": cfg.evaluate.model_dump(mode="json"), "k": cfg.aligner.k},
                      enabled=True)
    values = {}
    for group in ("reenactment", "swap"):
        for part, summary in result[group].items():
            values.update({f"{group}/{part}/{k}": v for k, v in summary.items()
                           if np.isfinite(v)})
    values.update({f"timing/{k}": float(v) for k, v in timings.items()})
    tracker.metrics(values, 0)
    for name in ("metrics.json", "evaluate_pairs.csv", "report.html"):
        tracker.artifact(reports / name, "evaluate")
    tracker.end()
    return tracker.run_id

