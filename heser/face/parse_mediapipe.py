"""Offline face parser from MediaPipe models: face-mesh polygons + selfie segmentation + colour.

The inner face (skin, brows, eyes, nose, lips, inner mouth) is drawn from the 468-point mesh.
Person pixels outside the mesh's face oval (selfie segmentation; the black border of a crop
that overran its source image excluded) are split into hair, ears, neck, body, and the skin
above the oval's forehead edge, from their position relative to the face and from colour
models fitted on the crop itself, on Lab plus local contrast (hair is textured):

* skin    - one Gaussian, sampled from the cheeks (inside the oval, away from the features);
* hair    - two Gaussians, from person pixels just outside the upper oval (ears excluded)
            that do not look like skin;
* clothes - three Gaussians, from the lower middle of what is visible below the chin, minus
            the hair-coloured mass that hangs together with the hair;
* other   - a flat outlier level for colours none of them explains.

Each person pixel gets the posterior of these classes with position priors (blurred a little
for spatial coherence); the zone rules of ``MediaPipeParser.label`` turn them into HeSer
regions. No learned parsing network is involved, so the result is approximate: hair the colour
of skin (blond, red) or of the clothes (black hair on a black top) is the usual failure.

Positions are measured in the face's own frame (``FaceFrame``): ``v`` runs down the face from
the eye line, ``ur`` across it from its middle. The constants below give the zones' extents as
fractions of the face's size: "face width" is the distance between the oval's widest points,
"face height" from the oval's top to the chin, and "eye-to-mouth" the height of the mouth
corners below the eye line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from heser.face.labels import Region
from heser.face.mediapipe import (
    MESH_CHIN,
    MESH_FACE_OVAL,
    MESH_LEFT_BROW,
    MESH_LEFT_EYE,
    MESH_LIPS_INNER,
    MESH_LIPS_OUTER,
    MESH_MOUTH_CORNERS,
    MESH_NOSE,
    MESH_OVAL_SIDES,
    MESH_OVAL_TOP,
    MESH_RIGHT_BROW,
    MESH_RIGHT_EYE,
    MediaPipeFace,
    SelfieSegmenter,
    as_rgb,
)

#: every region this parser can write (no HAT, no GLASSES)
PRODUCED_REGIONS: frozenset[Region] = frozenset({
    Region.BACKGROUND, Region.FACE, Region.BROW, Region.EYE, Region.NOSE, Region.LIP,
    Region.TOOTH, Region.EAR, Region.HAIR, Region.NECK, Region.BODY,
})

# Colour classes
_SKIN, _HAIR, _CLOTH, _OTHER = 0, 1, 2, 3
_MIN_SAMPLES = 40
# Squared Mahalanobis distances (4 features): beyond _FAR_CHI2 a colour is not skin (hair /
# clothes samples), and the outlier class sits at _OUTLIER_CHI2.
_FAR_CHI2 = 18.0
_OUTLIER_CHI2 = 30.0
# log-likelihood of "impossible" (a pixel no model scores)
_NEVER = -1e9

# ---- skin: samples from the cheeks
FEATURE_MARGIN = 0.04  # of face width: cheek samples keep this far from eyes, brows, nose, lips
CHEEK_INSET = 0.05  # of face width: ... and this far inside the face oval
CHEEK_TOP = 0.1  # of eye-to-mouth: ... and start this far below the eye line
MIN_SKIN_SAMPLES = 5  # pixels: with fewer cheek samples there is no skin model
# skin in shadow (under the chin): the cheeks' hue, some saturation, not brighter
SHADOW_HUE = 15.0  # degrees: hue within this of the cheeks'
SHADOW_CHROMA = 0.5  # of the cheeks' chroma (Lab a, b): at least this saturated
SHADOW_LIGHTNESS = 5.0  # Lab L: at most this much brighter than the cheeks
FOREHEAD_SAMPLE_GAP = 0.03  # of face height: forehead samples lie this far above the brows

# ---- hair samples: just outside the upper oval, not where the ears are
EAR_DEPTH = 0.1  # of face height: the ear zone reaches this far below the mouth ...
EAR_REACH = 0.16  # of face width: ... no farther than this from the oval ...
EAR_OFFSET = 0.3  # of face width: ... and at least this far from the face's middle
HAIR_SAMPLE_LOW = 0.5  # of eye-to-mouth: hair samples lie above this
HAIR_SAMPLE_REACH = 0.25  # of face height: ... and within this of the oval
HAIR_COMPONENTS = 2  # Gaussians of the hair colour (highlights)

# ---- clothes samples: the lower middle of what is visible below the chin
CLOTH_DEPTH = 0.25  # of face height: clothes samples start this far below the chin ...
CLOTH_HALF_WIDTH = 0.6  # of face width: ... within this of the face's middle
CLOTH_MIN_SHARE = 0.01  # of the crop's area: fewer clothes samples make no model
CLOTH_COMPONENTS = 3  # Gaussians of the clothes colour (shirt, jacket, tie)

# ---- position priors (log-probability) and smoothing of the posteriors
HAIR_LENGTH = 0.3  # of face height below the chin: hair is unlikely beyond this ...
HAIR_LENGTH_PENALTY = 3.0  # ... losing this per face height further down
CLOTH_RISE_PENALTY = 4.0  # clothes lose this per face height above the chin
NECK_PRIOR = 2.0  # skin gains this right below the chin, fading out at neck_depth
NECK_MIDDLE = 0.4  # of face width: the neck's middle, where skin is likeliest
POSTERIOR_BLUR = 0.008  # of face width: Gaussian sigma of the posteriors' blur ...
MIN_POSTERIOR_BLUR = 0.8  # pixels: ... at least this
SKIN_MAX_CHI2 = 4 * _FAR_CHI2  # a skin-class pixel this far from the cheeks' colour is not skin

# ---- forehead / bald scalp above the oval's top edge
FOREHEAD_MIN_POSTERIOR = 0.7  # skin posterior of forehead skin
FOREHEAD_MAX_CHI2 = 9.0  # distance to the forehead's own colour
CROWN_HEIGHT = 0.25  # of face height: the crown is this much above the oval's top ...
CROWN_HALF_WIDTH = 0.3  # of face width: ... within this of the face's middle
BALD_SHARE = 0.8  # a crown that is skin-like to this share is a bald head
BALD_REACH = 0.45  # of face height: forehead skin of a bald head reaches this far up ...
FOREHEAD_REACH = 0.12  # of face height: ... else only this (skin colour higher is blond hair)
FOREHEAD_LOW = 0.25  # of eye-to-mouth: the forehead outside the oval lies above this
FOREHEAD_HALF_WIDTH = 0.55  # of face width: ... within this of the face's middle

# ---- ears: skin beside the face between brow and mouth height
EAR_OPENING = 0.02  # of face width: radius of the opening that cuts ears from speckle
EAR_MIN_AREA = 0.004  # of face width x face height
EAR_GROWTH = 0.03  # of face width: growth into shaded skin (the ear's rim and bowl)

# ---- neck
NECK_HALF_WIDTH = 0.52  # of face width: the neck zone, within this of the face's middle
UNDER_CHIN_DEPTH = 0.18  # of face height: right under the chin, the neck in shadow ...
UNDER_CHIN_HALF_WIDTH = 0.35  # of face width: ... within this of the middle
NECK_OPENING = 0.02  # of face width
NECK_CLOSING = 0.05  # of face width: fills the shadow under the jaw
NECK_SEED_DEPTH = 0.3  # of face height: the neck touches the zone within this below the chin

# ---- hair
JAW_HAIR_RISE = 0.1  # of face height: hair columns are counted from this above the mouth
HAIR_COLUMNS = 64  # bins across the face for the columns with hair beside the jaw
HAIR_COLUMN_MIN = 0.01  # of face height (at least 2 pixels): hair pixels a column needs
HAIR_COLUMN_GROWTH = 0.08  # of face width: columns with hair widen by this
HAIR_OPENING = 0.012  # of face width
HAIR_SEED_REACH = 0.12  # of face height: hair touches the oval's surroundings within this
HAIR_MIN_AREA = 0.0015  # of the crop's area: smaller hair pieces are dropped
SIDE_FACE_REACH = 0.1  # of face width: temple / sideburn skin within this of the oval is face
BODY_MIN_AREA = 0.01  # of the crop's area: a body piece touching neither neck nor hair
BODY_SEED_GROWTH = 2  # pixels: a body piece this close to the neck or hair touches it
FRINGE_BROW_MARGIN = 0.03  # of face width: a fringe keeps this far from the brows

# ---- inner mouth: only when the mouth is open. The mesh's inner contour keeps some area even
# with closed lips, so the gap between the inner lip edges is measured instead (closed: < 0.06
# of the mouth width on the sample faces; open: > 0.1).
LIP_GAP_PAIRS = ((82, 87), (13, 14), (312, 317))  # inner-lip mesh points (upper, lower)
OPEN_MOUTH = 0.08  # of the mouth width (corner to corner)
MIN_MOUTH_AREA = 4  # pixels: a smaller inner mouth is not painted


def five_points_from_landmarks(landmarks: np.ndarray, scheme: str) -> np.ndarray:
    """Image-centric five points (eyes, nose tip, mouth corners) from another scheme."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    if scheme == "ibug68" or len(pts) == 68:
        eyes = [pts[36:42].mean(0), pts[42:48].mean(0)]
        nose, mouth = pts[30], [pts[48], pts[54]]
    elif len(pts) == 5:
        eyes, nose, mouth = [pts[0], pts[1]], pts[2], [pts[3], pts[4]]
    else:
        raise ValueError(f"cannot derive five points from scheme {scheme!r} "
                         f"with {len(pts)} landmarks")
    eyes = sorted(eyes, key=lambda p: p[0])
    mouth = sorted(mouth, key=lambda p: p[0])
    return np.stack([eyes[0], eyes[1], nose, mouth[0], mouth[1]]).astype(np.float32)


def _poly(mask_shape: tuple[int, int], pts: np.ndarray) -> np.ndarray:
    mask = np.zeros(mask_shape, np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    return mask.astype(bool)


class _Gaussian:
    """A full-covariance Gaussian in Lab, fitted robustly (one trimming pass)."""

    def __init__(self, samples: np.ndarray):
        x = samples.astype(np.float32)
        self._fit(x)
        d2 = self.maha(x)
        keep = d2 <= np.quantile(d2, 0.9)
        if keep.sum() >= _MIN_SAMPLES:
            self._fit(x[keep])

    def _fit(self, x: np.ndarray) -> None:
        self.mean = x.mean(0, dtype=np.float64)
        # floor: JPEG noise and shading
        dims = x.shape[1]
        floor = np.array([9.0, 4.0, 4.0, 1.0][:dims])
        self.cov = np.cov(x, rowvar=False).reshape(dims, dims) + np.diag(floor)
        self.icov = np.linalg.inv(self.cov)
        self.logdet = float(np.linalg.slogdet(self.cov)[1])
        self.mean32 = self.mean.astype(np.float32)
        self.icov32 = self.icov.astype(np.float32)

    def maha(self, x: np.ndarray) -> np.ndarray:
        d = x - self.mean32
        return ((d @ self.icov32) * d).sum(axis=1)

    def loglik(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * (self.maha(x) + self.logdet)


class _Mixture:
    """A few Gaussians from k-means on the samples (clothes: shirt + jacket + tie; hair with
    highlights); log-likelihood of the best component plus its log weight."""

    def __init__(self, samples: np.ndarray, k: int):
        x = samples.astype(np.float32)
        k = int(min(k, len(x) // _MIN_SAMPLES))
        comps: list[tuple[_Gaussian, float]] = []
        if k >= 2:
            criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 0.5)
            cv2.setRNGSeed(0)
            _, labels, _ = cv2.kmeans(x, k, None, criteria, 1, cv2.KMEANS_PP_CENTERS)
            labels = labels.ravel()
            for j in range(k):
                part = x[labels == j]
                if len(part) >= _MIN_SAMPLES:
                    comps.append((_Gaussian(part), len(part) / len(x)))
        if not comps:
            comps = [(_Gaussian(x), 1.0)]
        self.components = comps
        self.logdet = float(np.median([g.logdet for g, _ in comps]))

    def maha(self, x: np.ndarray) -> np.ndarray:
        return np.min([g.maha(x) for g, _ in self.components], axis=0)

    def loglik(self, x: np.ndarray) -> np.ndarray:
        return np.max([g.loglik(x) + np.log(wt) for g, wt in self.components], axis=0)


def _keep_components(mask: np.ndarray, seed: np.ndarray | None = None,
                     min_area: int = 0, largest: int = 0) -> np.ndarray:
    """Components of ``mask`` touching ``seed`` (if given), at least ``min_area`` pixels, and
    at most the ``largest`` biggest ones (0 = all)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    ok = np.zeros(n, bool)
    ok[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    if seed is not None:
        touched = np.zeros(n, bool)
        touched[np.unique(lab[seed & mask.astype(bool)])] = True
        ok &= touched
    if largest:
        areas = np.where(ok, stats[:, cv2.CC_STAT_AREA], -1)
        areas[0] = -1
        order = np.argsort(-areas)[:largest]
        sel = np.zeros(n, bool)
        sel[order[areas[order] > 0]] = True
        ok &= sel
    ok[0] = False
    return ok[lab]


def void_border(rgb: np.ndarray, min_fraction: float = 0.002) -> np.ndarray:
    """Pure-black regions touching the crop's edge: the part of a crop window that fell outside
    its source image (align.warp_crop pads with black). They are background, whatever the
    segmenter says about them."""
    h, w = rgb.shape[:2]
    black = (rgb.max(axis=2) == 0).astype(np.uint8)
    if not black[0].any() and not black[-1].any() and not black[:, 0].any() \
            and not black[:, -1].any():
        return np.zeros((h, w), bool)
    edge = np.zeros((h, w), bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    void = _keep_components(black, seed=edge, min_area=int(min_fraction * h * w))
    # the warp's bilinear seam: one more pixel of near-black next to the void
    return cv2.dilate(void.astype(np.uint8), _disk(1)).astype(bool)


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _morph(mask: np.ndarray, op: int, radius: float) -> np.ndarray:
    """A morphological operation (cv2.MORPH_*) with a disk of ``radius`` pixels."""
    return cv2.morphologyEx(mask.astype(np.uint8), op, _disk(radius)).astype(bool)


@dataclass(frozen=True)
class MeshParts:
    """The mesh's inner-face polygons as boolean masks."""

    oval: np.ndarray
    eyes: np.ndarray
    brows: np.ndarray
    nose: np.ndarray
    lips: np.ndarray  # outer lip contour
    mouth: np.ndarray  # inner lip contour


def mesh_parts(mesh: np.ndarray, shape: tuple[int, int]) -> MeshParts:
    def poly(idx: tuple[int, ...]) -> np.ndarray:
        return _poly(shape, mesh[list(idx)])

    return MeshParts(oval=poly(MESH_FACE_OVAL), eyes=poly(MESH_RIGHT_EYE) | poly(MESH_LEFT_EYE),
                     brows=poly(MESH_RIGHT_BROW) | poly(MESH_LEFT_BROW), nose=poly(MESH_NOSE),
                     lips=poly(MESH_LIPS_OUTER), mouth=poly(MESH_LIPS_INNER))


@dataclass(frozen=True)
class FaceFrame:
    """Every pixel in the face's own frame, in pixels: origin between the eyes, ``v`` down the
    face, ``ur`` across it from its middle; the landmarks' heights on ``v`` and the face's size."""

    v: np.ndarray
    ur: np.ndarray
    v_top: float  # the oval's top
    v_brow: float  # mean of the brows
    v_mouth: float  # the mouth corners
    v_chin: float
    face_w: float  # between the oval's widest points
    face_h: float  # oval top to chin
    above_mouth: np.ndarray
    above_chin: np.ndarray


def face_frame(mesh: np.ndarray, shape: tuple[int, int]) -> FaceFrame:
    """The frame of the (468, 2) ``mesh`` over an image of ``shape``."""
    h, w = shape
    eye_r = mesh[list(MESH_RIGHT_EYE)].mean(0)
    eye_l = mesh[list(MESH_LEFT_EYE)].mean(0)
    ex = eye_l - eye_r  # subject's right eye to left eye: image right on an upright face
    ex /= max(float(np.linalg.norm(ex)), 1e-6)
    ey = np.array([-ex[1], ex[0]])
    origin = (eye_r + eye_l) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (xx - origin[0]) * ex[0] + (yy - origin[1]) * ex[1]
    v = (xx - origin[0]) * ey[0] + (yy - origin[1]) * ey[1]
    mu = (mesh - origin) @ ex
    mv = (mesh - origin) @ ey
    right, left = MESH_OVAL_SIDES
    v_top, v_chin = float(mv[MESH_OVAL_TOP]), float(mv[MESH_CHIN])
    v_mouth = float(mv[MESH_MOUTH_CORNERS[0]] + mv[MESH_MOUTH_CORNERS[1]]) / 2
    v_brow = float(np.mean(mv[list(MESH_RIGHT_BROW) + list(MESH_LEFT_BROW)]))
    face_w = max(abs(float(mu[left] - mu[right])), 1.0)
    ur = u - float(mu[left] + mu[right]) / 2
    return FaceFrame(v, ur, v_top, v_brow, v_mouth, v_chin, face_w, max(v_chin - v_top, 1.0),
                     above_mouth=v < v_mouth, above_chin=v < v_chin)


def pixel_features(rgb: np.ndarray) -> np.ndarray:
    """(h*w, 4) colour features: Lab of a lightly smoothed crop and local contrast (hair is
    textured, skin and most clothes are smooth)."""
    smooth = cv2.GaussianBlur(rgb, (0, 0), 1.0)
    lab = cv2.cvtColor(smooth.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (100.0 / 255.0)
    texture = np.sqrt(np.clip(cv2.blur(grey * grey, (5, 5)) - cv2.blur(grey, (5, 5)) ** 2,
                              0, None))
    return np.concatenate([lab, texture[:, :, None]], axis=2).reshape(-1, 4)


class _Pixels:
    """The crop's colour features, and the candidate pixels (person or face oval) that the
    colour models score."""

    def __init__(self, rgb: np.ndarray, cand: np.ndarray):
        self.shape = cand.shape
        self.feats = pixel_features(rgb)
        self.cand = cand
        self.cand_idx = np.flatnonzero(cand.ravel())
        self.x = self.feats[self.cand_idx]

    def on_cand(self, values: np.ndarray, fill: float) -> np.ndarray:
        """An image holding ``values`` (one per candidate) at the candidates, ``fill`` elsewhere."""
        full = np.full(self.cand.size, fill, np.float64)
        full[self.cand_idx] = values
        return full.reshape(self.shape)

    def fit(self, mask: np.ndarray, k: int = 1) -> _Gaussian | _Mixture | None:
        """A colour model of the pixels in ``mask`` (``k`` Gaussians); None if too few."""
        if mask.sum() < _MIN_SAMPLES:
            return None
        samples = self.feats[mask.ravel()]
        return _Gaussian(samples) if k == 1 else _Mixture(samples, k)


@dataclass(frozen=True)
class _Scene:
    """What every step looks at: the mesh's parts, the face frame and the pixels."""

    parts: MeshParts
    frame: FaceFrame
    pixels: _Pixels
    person: np.ndarray
    outside: np.ndarray  # person pixels outside the face oval
    dist_oval: np.ndarray  # distance to the face oval, pixels


# ---- colour models -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Skin:
    model: _Gaussian | None  # of the cheeks
    d2: np.ndarray  # squared Mahalanobis distance to the cheeks' colour (inf: not scored)
    shadow: np.ndarray  # skin chroma, darker: skin in shadow
    forehead_d2: np.ndarray  # distance to the forehead's own colour (its lighting differs)

    @property
    def not_skin(self) -> np.ndarray:
        return self.d2 > _FAR_CHI2


def _cheek_samples(clear: np.ndarray, oval: np.ndarray, frame: FaceFrame) -> np.ndarray:
    """The cheeks, from the oval's inside ``clear`` of the features (fallbacks if too few)."""
    cheeks = clear & (frame.v > CHEEK_TOP * frame.v_mouth) & frame.above_mouth
    if cheeks.sum() < _MIN_SAMPLES:
        cheeks = clear
    if cheeks.sum() < _MIN_SAMPLES:
        cheeks = oval
    return cheeks


def _shadow_skin(pixels: _Pixels, model: _Gaussian) -> np.ndarray:
    """Skin in shadow (under the chin): the cheeks' hue, some saturation, not brighter (shading
    deepens skin's colour)."""
    x = pixels.x
    ma, mb = float(model.mean[1]), float(model.mean[2])
    hue_diff = np.abs(np.angle((x[:, 1] + 1j * x[:, 2]) / (ma + 1j * mb + 1e-6)))
    return pixels.on_cand((hue_diff < np.radians(SHADOW_HUE))
                          & (np.hypot(x[:, 1], x[:, 2]) > SHADOW_CHROMA * np.hypot(ma, mb))
                          & (x[:, 0] < model.mean[0] + SHADOW_LIGHTNESS), 0) > 0


def _skin_colour(scene: _Scene) -> _Skin:
    """The skin model from the cheeks (inside the oval, away from the features), and the
    forehead's from the skin-coloured part of the forehead."""
    parts, frame, pixels = scene.parts, scene.frame, scene.pixels
    features = _morph(parts.eyes | parts.brows | parts.nose | parts.lips, cv2.MORPH_DILATE,
                      FEATURE_MARGIN * frame.face_w)
    clear = _morph(parts.oval, cv2.MORPH_ERODE, CHEEK_INSET * frame.face_w) & ~features
    cheeks = _cheek_samples(clear, parts.oval, frame)
    if cheeks.sum() < MIN_SKIN_SAMPLES:
        unscored = np.full(pixels.shape, np.inf)
        return _Skin(None, unscored, np.zeros(pixels.shape, bool), unscored)
    model = _Gaussian(pixels.feats[cheeks.ravel()])
    d2 = pixels.on_cand(model.maha(pixels.x), np.inf)
    forehead = clear & (frame.v < frame.v_brow - FOREHEAD_SAMPLE_GAP * frame.face_h) & (
        d2 < _FAR_CHI2)
    forehead_model = pixels.fit(forehead)
    forehead_d2 = pixels.on_cand(forehead_model.maha(pixels.x), np.inf) if forehead_model else d2
    return _Skin(model, d2, _shadow_skin(pixels, model), forehead_d2)


def _ear_zone(scene: _Scene) -> np.ndarray:
    """Beside the face between brow and mouth height, near the oval's sides."""
    frame = scene.frame
    return (scene.outside & (frame.v > frame.v_brow)
            & (frame.v < frame.v_mouth + EAR_DEPTH * frame.face_h)
            & (scene.dist_oval < EAR_REACH * frame.face_w)
            & (np.abs(frame.ur) > EAR_OFFSET * frame.face_w))


def _hair_samples(scene: _Scene, not_skin: np.ndarray, ear_zone: np.ndarray) -> np.ndarray:
    """Just outside the upper oval, not skin-coloured (not where the ears are: they are often
    darker or shinier than the cheeks)."""
    frame = scene.frame
    return (scene.outside & (frame.v < HAIR_SAMPLE_LOW * frame.v_mouth)
            & (scene.dist_oval < HAIR_SAMPLE_REACH * frame.face_h) & not_skin & ~ear_zone)


def _cloth_samples(scene: _Scene, not_skin: np.ndarray, hair_mass: np.ndarray) -> np.ndarray:
    """The lower middle of what is visible below the chin, minus the hair mass."""
    frame, person = scene.frame, scene.person
    band = (person & (frame.v > frame.v_chin + CLOTH_DEPTH * frame.face_h) & not_skin
            & ~hair_mass & (np.abs(frame.ur) < CLOTH_HALF_WIDTH * frame.face_w))
    if band.sum() >= 2 * _MIN_SAMPLES:
        return band & (frame.v >= np.median(frame.v[band]))
    return person & (frame.v > frame.v_chin) & not_skin & ~hair_mass


@dataclass(frozen=True)
class _Colours:
    """The colour models' log-likelihoods, and the samples they were fitted on."""

    skin: _Skin
    skin_ll: np.ndarray
    hair_model: _Mixture | _Gaussian | None
    hair_ll: np.ndarray
    hair_band: np.ndarray  # hair samples
    hair_mass: np.ndarray  # hair-coloured pixels that hang together with the hair samples
    cloth_model: _Mixture | _Gaussian | None
    cloth_band: np.ndarray  # clothes samples
    ear_zone: np.ndarray


def _colour_models(scene: _Scene) -> _Colours:
    """Skin, then hair (from pixels that are not skin), then clothes (neither skin nor hair)."""
    pixels = scene.pixels
    skin = _skin_colour(scene)
    not_skin = skin.not_skin
    ear_zone = _ear_zone(scene)
    hair_band = _hair_samples(scene, not_skin, ear_zone)
    hair_model = pixels.fit(hair_band, k=HAIR_COMPONENTS)
    skin_ll = (np.where(pixels.cand, -0.5 * (skin.d2 + skin.model.logdet), _NEVER) if skin.model
               else np.full(pixels.shape, _NEVER))
    other_ll = -0.5 * (_OUTLIER_CHI2 + (skin.model.logdet if skin.model else 0.0))
    if hair_model is not None:
        hair_ll = pixels.on_cand(hair_model.loglik(pixels.x), _NEVER)
        hair_mass = _keep_components(scene.outside & (hair_ll > skin_ll) & (hair_ll > other_ll),
                                     seed=hair_band)
    else:
        hair_ll = np.full(pixels.shape, _NEVER)
        hair_mass = np.zeros(pixels.shape, bool)
    cloth_band = _cloth_samples(scene, not_skin, hair_mass)
    h, w = pixels.shape
    # a handful of stray pixels makes a model that steals hair: demand a real sample
    enough = cloth_band.sum() >= max(3 * _MIN_SAMPLES, CLOTH_MIN_SHARE * h * w)
    cloth_model = pixels.fit(cloth_band, k=CLOTH_COMPONENTS) if enough else None
    return _Colours(skin, skin_ll, hair_model, hair_ll, hair_band, hair_mass, cloth_model,
                    cloth_band, ear_zone)


# ---- classes -------------------------------------------------------------------------------
def _log_likelihoods(pixels: _Pixels, colours: _Colours) -> np.ndarray:
    """(4, h, w) log-likelihood of skin / hair / clothes / other. The outlier class: colours
    no model explains (props, unsampled clothes); it counts as clothes below the mouth and as
    hair above."""
    h, w = pixels.shape
    logp = np.full((4, h, w), _NEVER, np.float64)
    logp[_SKIN], logp[_HAIR] = colours.skin_ll, colours.hair_ll
    if colours.cloth_model is not None:
        logp[_CLOTH] = pixels.on_cand(colours.cloth_model.loglik(pixels.x), _NEVER)
    logdets = [m.logdet for m in (colours.skin.model, colours.hair_model, colours.cloth_model)
               if m is not None]
    logp[_OTHER] = np.where(pixels.cand, -0.5 * (_OUTLIER_CHI2 + float(np.median(logdets)))
                            if logdets else 0.0, _NEVER)
    return logp


def _add_position_priors(logp: np.ndarray, frame: FaceFrame, neck_depth: float) -> None:
    """Hair fades out below the chin, clothes above it; the neck right below the chin is skin
    far more often than clothes."""
    v, v_chin, face_h = frame.v, frame.v_chin, frame.face_h
    below = np.clip((v - v_chin) / face_h, 0, None)
    logp[_HAIR] -= HAIR_LENGTH_PENALTY * np.clip(below - HAIR_LENGTH, 0, None)
    logp[_CLOTH] -= CLOTH_RISE_PENALTY * np.clip((v_chin - v) / face_h, 0, None)
    neck_prior = NECK_PRIOR * np.clip(1.0 - (v - v_chin) / (neck_depth * face_h), 0, 1)
    logp[_SKIN] += np.where(~frame.above_chin & (np.abs(frame.ur) < NECK_MIDDLE * frame.face_w),
                            neck_prior, 0.0)


@dataclass(frozen=True)
class _Classes:
    post: np.ndarray  # (4, h, w) smoothed posteriors
    cls: np.ndarray  # the likeliest class
    skin: np.ndarray  # skin class, not too far from the cheeks' colour
    shadow_skin: np.ndarray
    hairish: np.ndarray  # hair class


def _classify(scene: _Scene, colours: _Colours, neck_depth: float) -> _Classes:
    """Posteriors of the colour classes with position priors, blurred for spatial coherence."""
    logp = _log_likelihoods(scene.pixels, colours)
    _add_position_priors(logp, scene.frame, neck_depth)
    logp -= logp.max(0, keepdims=True)
    post = np.exp(logp)
    post /= post.sum(0, keepdims=True)
    sigma = max(MIN_POSTERIOR_BLUR, POSTERIOR_BLUR * scene.frame.face_w)
    post = np.stack([cv2.GaussianBlur(p.astype(np.float32), (0, 0), sigma) for p in post])
    cls = post.argmax(0)
    return _Classes(post, cls, (cls == _SKIN) & (colours.skin.d2 < SKIN_MAX_CHI2),
                    colours.skin.shadow, cls == _HAIR)


# ---- regions outside the oval --------------------------------------------------------------
def _forehead(scene: _Scene, colours: _Colours, classes: _Classes) -> np.ndarray:
    """Forehead / bald scalp right above the oval's top edge, joined to the oval (a high
    forehead or a bald head reaches far up; otherwise skin-coloured pixels up there are mostly
    blond hair, so only a thin band is allowed)."""
    frame, outside, oval = scene.frame, scene.outside, scene.parts.oval
    v, ur, face_h, face_w = frame.v, frame.ur, frame.face_h, frame.face_w
    skinlike = (outside & classes.skin & (classes.post[_SKIN] > FOREHEAD_MIN_POSTERIOR)
                & (colours.skin.forehead_d2 < FOREHEAD_MAX_CHI2))
    crown = (outside & (v > frame.v_top - CROWN_HEIGHT * face_h) & (v < frame.v_top)
             & (np.abs(ur) < CROWN_HALF_WIDTH * face_w))
    bald = crown.sum() > _MIN_SAMPLES and (skinlike & crown).sum() > BALD_SHARE * crown.sum()
    reach = BALD_REACH if bald else FOREHEAD_REACH
    forehead = (skinlike & (v < FOREHEAD_LOW * frame.v_mouth)
                & (np.abs(ur) < FOREHEAD_HALF_WIDTH * face_w) & (v > frame.v_top - reach * face_h))
    return _keep_components(forehead | oval, seed=oval) & ~oval


def _ears(scene: _Scene, ear_zone: np.ndarray, classes: _Classes,
          forehead: np.ndarray) -> np.ndarray:
    """Skin in the ear zone, the two biggest pieces, grown a little into shaded skin of the
    same zone (the ear's rim and bowl)."""
    frame = scene.frame
    skin, shadow = classes.skin, classes.shadow_skin
    ears = _morph(ear_zone & (skin | shadow & ~classes.hairish) & ~forehead, cv2.MORPH_OPEN,
                  EAR_OPENING * frame.face_w)
    ears = _keep_components(ears, min_area=int(EAR_MIN_AREA * frame.face_w * frame.face_h),
                            largest=2)
    return _morph(ears, cv2.MORPH_DILATE, EAR_GROWTH * frame.face_w) & ear_zone & (
        ears | skin | shadow)


def _neck_zone(scene: _Scene, neck_depth: float) -> np.ndarray:
    """Below the mouth, about a face wide, down to ``neck_depth`` face heights below the chin."""
    frame = scene.frame
    return (scene.outside & ~frame.above_mouth
            & (np.abs(frame.ur) < NECK_HALF_WIDTH * frame.face_w)
            & (frame.v < frame.v_chin + neck_depth * frame.face_h))


def _neck(scene: _Scene, neck_zone: np.ndarray, classes: _Classes,
          ears: np.ndarray) -> np.ndarray:
    """Skin (or shadowed skin near the middle) in the neck zone, starting right below the chin.
    Right under the chin, in the middle, is the neck in shadow whatever its colour (it can be
    as dark as the hair) unless it looks like the clothes."""
    frame = scene.frame
    v, ur, face_w = frame.v, frame.ur, frame.face_w
    under_chin = ((v < frame.v_chin + UNDER_CHIN_DEPTH * frame.face_h)
                  & (np.abs(ur) < UNDER_CHIN_HALF_WIDTH * face_w) & (classes.cls != _CLOTH))
    neck = neck_zone & (classes.skin | classes.shadow_skin & (np.abs(ur) < NECK_MIDDLE * face_w)
                        | under_chin)
    neck &= ~ears
    neck = _morph(neck, cv2.MORPH_OPEN, NECK_OPENING * face_w)
    neck = _morph(neck, cv2.MORPH_CLOSE, NECK_CLOSING * face_w) & neck_zone  # shadow under jaw
    return _keep_components(neck, seed=neck_zone & (v < frame.v_chin + NECK_SEED_DEPTH
                                                    * frame.face_h))


def _hair_columns(frame: FaceFrame, band: np.ndarray) -> np.ndarray:
    """The pixels in the columns (across the face) where ``band`` has hair, widened a little."""
    ur = frame.ur
    lo, hi = float(ur.min()), float(ur.max()) + 1e-6
    bins = np.clip(((ur - lo) / (hi - lo) * HAIR_COLUMNS).astype(np.int32), 0, HAIR_COLUMNS - 1)
    cols = np.bincount(bins[band], minlength=HAIR_COLUMNS) >= max(
        2.0, HAIR_COLUMN_MIN * frame.face_h)
    grow = max(1, int(round(HAIR_COLUMN_GROWTH * frame.face_w / ((hi - lo) / HAIR_COLUMNS))))
    cols = np.convolve(cols.astype(np.float32), np.ones(2 * grow + 1), "same") > 0
    return cols[bins]


def _hair(scene: _Scene, classes: _Classes, rest: np.ndarray) -> np.ndarray:
    """Above the mouth every non-skin person pixel (hats and clips included); lower,
    hair-coloured pixels that hang together with the hair above and fall in the columns where
    there is hair beside the jaw."""
    frame = scene.frame
    hair_top = rest & frame.above_mouth & ~classes.skin
    hair_jaw = rest & ~frame.above_mouth & frame.above_chin & (
        classes.hairish | (classes.cls == _OTHER))
    band = (hair_top | hair_jaw) & (frame.v > frame.v_mouth - JAW_HAIR_RISE * frame.face_h)
    hair_low = rest & ~frame.above_chin & classes.hairish & _hair_columns(frame, band)
    hair = _morph(hair_top | hair_jaw | hair_low, cv2.MORPH_OPEN, HAIR_OPENING * frame.face_w)
    h, w = hair.shape
    return _keep_components(hair, seed=hair_top & (scene.dist_oval
                                                   < HAIR_SEED_REACH * frame.face_h),
                            min_area=int(HAIR_MIN_AREA * h * w))


def _side_face(scene: _Scene, classes: _Classes, left: np.ndarray) -> np.ndarray:
    """Skin joined to the oval above the chin (temples, sideburn skin)."""
    frame, oval = scene.frame, scene.parts.oval
    side_face = (left & classes.skin & frame.above_chin & (frame.v > frame.v_brow)
                 & (scene.dist_oval < SIDE_FACE_REACH * frame.face_w))
    return _keep_components(side_face | oval, seed=oval) & ~oval


def _body(body: np.ndarray, neck: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """Drop small islands (segmentation speckles in the background) that touch neither the
    neck, the hair nor a big body part."""
    h, w = body.shape
    joined = _keep_components(body, seed=_morph(neck | hair, cv2.MORPH_DILATE, BODY_SEED_GROWTH),
                              min_area=0)
    return joined | _keep_components(body, min_area=int(BODY_MIN_AREA * h * w))


def _fringe(scene: _Scene, colours: _Colours, classes: _Classes,
            hair: np.ndarray) -> np.ndarray:
    """Hair over the oval (fringe, temples): clearly-not-skin, hair-coloured pixels above the
    brows that join the hair outside."""
    if colours.hair_model is None:
        return np.zeros(hair.shape, bool)
    frame, parts = scene.frame, scene.parts
    brow_zone = _morph(parts.brows, cv2.MORPH_DILATE, FRINGE_BROW_MARGIN * frame.face_w)
    fringe = (parts.oval & (frame.v < frame.v_brow) & classes.hairish & colours.skin.not_skin
              & ~brow_zone)
    return _keep_components(fringe | hair, seed=hair) & fringe


def mouth_is_open(mesh: np.ndarray) -> bool:
    """Whether the inner lip edges are apart by more than OPEN_MOUTH of the mouth's width."""
    gap = np.mean([np.linalg.norm(mesh[a] - mesh[b]) for a, b in LIP_GAP_PAIRS])
    width = float(np.linalg.norm(mesh[MESH_MOUTH_CORNERS[0]] - mesh[MESH_MOUTH_CORNERS[1]]))
    return bool(gap > OPEN_MOUTH * width)


class MediaPipeParser:
    """``FaceParser`` built from MediaPipe's face mesh and selfie segmentation."""

    name = "mediapipe"

    def __init__(self, weights_dir: Path, person_threshold: float = 0.5,
                 neck_depth: float = 0.55, *, num_threads: int = 1):
        self.weights_dir = Path(weights_dir)
        self.person_threshold = float(person_threshold)
        self.neck_depth = float(neck_depth)
        self.num_threads = num_threads
        self.segmenter = SelfieSegmenter(self.weights_dir, num_threads=num_threads)
        self._face: MediaPipeFace | None = None
        #: set to a dict to receive the intermediate masks of the next call (debugging)
        self.debug: dict | None = None
        self.version = (f"mediapipe-parse-1:{self.segmenter.version}+face_landmark.tflite:"
                        f"person>{self.person_threshold:g}:neck{self.neck_depth:g}")

    @property
    def face_backend(self) -> MediaPipeFace:
        """The mesh model, loaded on first use (only needed for non-mesh landmarks)."""
        if self._face is None:
            self._face = MediaPipeFace(self.weights_dir, num_threads=self.num_threads)
        return self._face

    # ------------------------------------------------------------------------------------
    def mesh_for(self, crop_rgb: np.ndarray, landmarks: np.ndarray, scheme: str) -> np.ndarray:
        """(468, 2|3) mesh in crop pixels for the given landmarks."""
        lm = np.asarray(landmarks, np.float32)
        if scheme == "mediapipe468" and lm.shape[0] == 468:
            return lm
        five = five_points_from_landmarks(lm, scheme)
        return self.face_backend.mesh_from_five_points(crop_rgb, five)

    def __call__(self, crop_rgb: np.ndarray, landmarks: np.ndarray, scheme: str) -> np.ndarray:
        rgb = as_rgb(crop_rgb)
        mesh = self.mesh_for(rgb, landmarks, scheme)[:, :2].astype(np.float64)
        person = self.segmenter(rgb) > self.person_threshold
        person &= ~void_border(rgb)
        return self.label(rgb, mesh, person)

    # ------------------------------------------------------------------------------------
    def label(self, rgb: np.ndarray, mesh: np.ndarray, person: np.ndarray) -> np.ndarray:
        """The label map from a crop, its (468, 2) mesh and its boolean person mask."""
        shape = rgb.shape[:2]
        parts = mesh_parts(mesh, shape)
        scene = _Scene(parts, face_frame(mesh, shape), _Pixels(rgb, person | parts.oval),
                       person, person & ~parts.oval,
                       cv2.distanceTransform((~parts.oval).astype(np.uint8), cv2.DIST_L2, 3))
        colours = _colour_models(scene)
        classes = _classify(scene, colours, self.neck_depth)
        forehead = _forehead(scene, colours, classes)
        ears = _ears(scene, colours.ear_zone, classes, forehead)
        neck_zone = _neck_zone(scene, self.neck_depth)
        neck = _neck(scene, neck_zone, classes, ears)
        rest = scene.outside & ~forehead & ~ears & ~neck
        hair = _hair(scene, classes, rest)
        # what is left: skin joined to the oval above the chin is face; the rest is body below
        # the mouth and hair above it
        left = rest & ~hair
        side_face = _side_face(scene, classes, left)
        left &= ~side_face
        hair |= left & scene.frame.above_mouth
        body = _body(left & ~scene.frame.above_mouth, neck, hair)
        fringe = _fringe(scene, colours, classes, hair)
        if self.debug is not None:
            self.debug.update(cls=classes.cls, person=person, skin=classes.skin,
                              shadow_skin=classes.shadow_skin, skin_d2=colours.skin.d2,
                              hair=hair, neck=neck, ears=ears, post=classes.post,
                              hair_band=colours.hair_band, cloth_band=colours.cloth_band,
                              forehead=forehead, neck_zone=neck_zone, body=body,
                              side_face=side_face, hair_mass=colours.hair_mass)
        # paint, back to front
        out = np.zeros(shape, np.uint8)
        for mask, region in ((body, Region.BODY), (neck, Region.NECK), (hair, Region.HAIR),
                             (ears, Region.EAR), (forehead | side_face | parts.oval, Region.FACE),
                             (fringe, Region.HAIR), (parts.nose, Region.NOSE),
                             (parts.brows, Region.BROW), (parts.eyes, Region.EYE),
                             (parts.lips, Region.LIP)):
            out[mask] = region
        if mouth_is_open(mesh) and parts.mouth.sum() > MIN_MOUTH_AREA:
            out[parts.mouth] = Region.TOOTH
        return out
