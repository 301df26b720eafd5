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
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from heser.face.labels import Region
from heser.face.mediapipe import (
    MESH_FACE_OVAL,
    MESH_LEFT_BROW,
    MESH_LEFT_EYE,
    MESH_LIPS_INNER,
    MESH_LIPS_OUTER,
    MESH_MOUTH_CORNERS,
    MESH_NOSE,
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
# Squared Mahalanobis distances (4 features): under _SKIN_CHI2 a colour is close to skin (99 %
# of a Gaussian's mass), beyond _FAR_CHI2 it is not skin (hair / clothes samples), and the
# outlier class sits at _OUTLIER_CHI2.
_SKIN_CHI2 = 13.3
_FAR_CHI2 = 18.0
_OUTLIER_CHI2 = 30.0
# inner-lip point pairs (upper, lower) whose distance tells an open mouth
_LIP_GAP_PAIRS = ((82, 87), (13, 14), (312, 317))
_OPEN_MOUTH = 0.08


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
        self.icov_ab = np.linalg.inv(self.cov[1:3, 1:3]).astype(np.float32)
        self.mean32 = self.mean.astype(np.float32)
        self.icov32 = self.icov.astype(np.float32)

    def maha_ab(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of the chroma (a, b) alone: shading-tolerant."""
        d = x[:, 1:3] - self.mean32[1:3]
        return ((d @ self.icov_ab) * d).sum(axis=1)

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
        h, w = rgb.shape[:2]
        shape = (h, w)
        out = np.zeros(shape, np.uint8)

        def poly(idx: tuple[int, ...]) -> np.ndarray:
            return _poly(shape, mesh[list(idx)])

        def disk_op(mask: np.ndarray, op: int, radius: float) -> np.ndarray:
            return cv2.morphologyEx(mask.astype(np.uint8), op, _disk(radius)).astype(bool)

        oval = poly(MESH_FACE_OVAL)
        eyes = poly(MESH_RIGHT_EYE) | poly(MESH_LEFT_EYE)
        brows = poly(MESH_RIGHT_BROW) | poly(MESH_LEFT_BROW)
        nose = poly(MESH_NOSE)
        lips_outer = poly(MESH_LIPS_OUTER)
        inner = poly(MESH_LIPS_INNER)

        # ---- face frame: origin between the eyes, u along the eye line, v down the face
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
        v_top, v_chin = float(mv[10]), float(mv[152])
        v_mouth = float(mv[61] + mv[291]) / 2
        v_brow = float(np.mean(mv[list(MESH_RIGHT_BROW) + list(MESH_LEFT_BROW)]))
        face_h = max(v_chin - v_top, 1.0)
        face_w = max(abs(float(mu[454] - mu[234])), 1.0)
        ur = u - float(mu[454] + mu[234]) / 2  # across the face, from its middle
        above_mouth, above_chin = v < v_mouth, v < v_chin

        # ---- pixel features: Lab of a lightly smoothed crop + local contrast (hair is
        # textured, skin and most clothes are smooth)
        smooth = cv2.GaussianBlur(rgb, (0, 0), 1.0)
        lab = cv2.cvtColor(smooth.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (100.0 / 255.0)
        texture = np.sqrt(np.clip(cv2.blur(grey * grey, (5, 5)) - cv2.blur(grey, (5, 5)) ** 2,
                                  0, None))
        feats = np.concatenate([lab, texture[:, :, None]], axis=2).reshape(-1, 4)
        cand = person | oval
        cand_idx = np.flatnonzero(cand.ravel())
        x = feats[cand_idx]

        def on_cand(values: np.ndarray, fill: float) -> np.ndarray:
            full = np.full(h * w, fill, np.float64)
            full[cand_idx] = values
            return full.reshape(shape)

        def fit(mask: np.ndarray, k: int = 1) -> _Gaussian | _Mixture | None:
            if mask.sum() < _MIN_SAMPLES:
                return None
            return _Gaussian(feats[mask.ravel()]) if k == 1 else _Mixture(feats[mask.ravel()], k)

        # ---- skin: the cheeks (inside the oval, away from the features)
        features = disk_op(eyes | brows | nose | lips_outer, cv2.MORPH_DILATE, 0.04 * face_w)
        inner_oval = disk_op(oval, cv2.MORPH_ERODE, 0.05 * face_w)
        cheeks = inner_oval & ~features & (v > 0.1 * v_mouth) & above_mouth
        if cheeks.sum() < _MIN_SAMPLES:
            cheeks = inner_oval & ~features
        if cheeks.sum() < _MIN_SAMPLES:
            cheeks = oval
        skin_model = _Gaussian(feats[cheeks.ravel()]) if cheeks.sum() >= 5 else None
        outside = person & ~oval
        if skin_model is not None:
            skin_d2 = on_cand(skin_model.maha(x), np.inf)
            # skin in shadow (under the chin): skin chroma, not brighter than the cheeks
            # (same hue, some saturation, not brighter: shading deepens skin's colour)
            ma, mb = float(skin_model.mean[1]), float(skin_model.mean[2])
            hue_diff = np.abs(np.angle((x[:, 1] + 1j * x[:, 2]) / (ma + 1j * mb + 1e-6)))
            shadow_skin = on_cand((hue_diff < np.radians(15.0))
                                  & (np.hypot(x[:, 1], x[:, 2]) > 0.5 * np.hypot(ma, mb))
                                  & (x[:, 0] < skin_model.mean[0] + 5.0), 0) > 0
            # the forehead's own colour (its lighting differs from the cheeks')
            fh = inner_oval & ~features & (v < v_brow - 0.03 * face_h) & (skin_d2 < _FAR_CHI2)
            fh_model = fit(fh)
            forehead_d2 = on_cand(fh_model.maha(x), np.inf) if fh_model else skin_d2
        else:
            skin_d2 = np.full(shape, np.inf)
            shadow_skin = np.zeros(shape, bool)
            forehead_d2 = skin_d2
        not_skin = skin_d2 > _FAR_CHI2

        # ---- hair: just outside the upper oval, not skin-coloured
        dist_oval = cv2.distanceTransform((~oval).astype(np.uint8), cv2.DIST_L2, 3)
        # (not where the ears are: they are often darker or shinier than the cheeks)
        ear_zone = (outside & (v > v_brow) & (v < v_mouth + 0.1 * face_h)
                    & (dist_oval < 0.16 * face_w) & (np.abs(ur) > 0.3 * face_w))
        hair_band = (outside & (v < 0.5 * v_mouth) & (dist_oval < 0.25 * face_h) & not_skin
                     & ~ear_zone)
        hair_model = fit(hair_band, k=2)

        # ---- clothes: the lower middle of what is visible below the chin, minus the hair
        # mass (hair-coloured pixels hanging together with the hair band)
        skin_ll = (np.where(cand, -0.5 * (skin_d2 + skin_model.logdet), -1e9) if skin_model
                   else np.full(shape, -1e9))
        other_ll = -0.5 * (_OUTLIER_CHI2 + (skin_model.logdet if skin_model else 0.0))
        if hair_model is not None:
            hair_ll = on_cand(hair_model.loglik(x), -1e9)
            hair_mass = _keep_components(outside & (hair_ll > skin_ll) & (hair_ll > other_ll),
                                         seed=hair_band)
        else:
            hair_ll = np.full(shape, -1e9)
            hair_mass = np.zeros(shape, bool)
        cloth_band = (person & (v > v_chin + 0.25 * face_h) & not_skin & ~hair_mass
                      & (np.abs(ur) < 0.6 * face_w))
        if cloth_band.sum() >= 2 * _MIN_SAMPLES:
            cloth_band &= v >= np.median(v[cloth_band])
        else:
            cloth_band = person & (v > v_chin) & not_skin & ~hair_mass
        # a handful of stray pixels makes a model that steals hair: demand a real sample
        cloth_model = fit(cloth_band, k=3) if cloth_band.sum() >= max(
            3 * _MIN_SAMPLES, 0.01 * h * w) else None

        # ---- posteriors of skin / hair / clothes / other, with position priors, smoothed
        logp = np.full((4, h, w), -1e9, np.float64)
        logp[_SKIN], logp[_HAIR] = skin_ll, hair_ll
        if cloth_model is not None:
            logp[_CLOTH] = on_cand(cloth_model.loglik(x), -1e9)
        # the outlier class: colours no model explains (props, unsampled clothes); it counts
        # as clothes below the mouth and as hair above
        logdets = [m.logdet for m in (skin_model, hair_model, cloth_model) if m is not None]
        logp[_OTHER] = np.where(cand, -0.5 * (_OUTLIER_CHI2 + float(np.median(logdets)))
                                if logdets else 0.0, -1e9)
        below = np.clip((v - v_chin) / face_h, 0, None)
        logp[_HAIR] -= 3.0 * np.clip(below - 0.3, 0, None)
        logp[_CLOTH] -= 4.0 * np.clip((v_chin - v) / face_h, 0, None)
        # the neck right below the chin is skin far more often than clothes
        neck_prior = 2.0 * np.clip(1.0 - (v - v_chin) / (self.neck_depth * face_h), 0, 1)
        logp[_SKIN] += np.where(~above_chin & (np.abs(ur) < 0.4 * face_w), neck_prior, 0.0)
        logp -= logp.max(0, keepdims=True)
        post = np.exp(logp)
        post /= post.sum(0, keepdims=True)
        sigma = max(0.8, 0.008 * face_w)
        post = np.stack([cv2.GaussianBlur(p.astype(np.float32), (0, 0), sigma) for p in post])
        cls = post.argmax(0)
        skin = (cls == _SKIN) & (skin_d2 < 4 * _FAR_CHI2)
        hairish = cls == _HAIR

        # ---- skin zones outside the oval
        # forehead / bald scalp right above the oval's top edge, joined to the oval
        # (a high forehead or a bald head reaches far up; otherwise skin-coloured pixels up
        # there are mostly blond hair, so only a thin band is allowed)
        skinlike = outside & skin & (post[_SKIN] > 0.7) & (forehead_d2 < 9.0)
        crown = outside & (v > v_top - 0.25 * face_h) & (v < v_top) & (np.abs(ur) < 0.3 * face_w)
        bald = crown.sum() > _MIN_SAMPLES and (skinlike & crown).sum() > 0.8 * crown.sum()
        reach = 0.45 if bald else 0.12
        forehead = (skinlike & (v < 0.25 * v_mouth) & (np.abs(ur) < 0.55 * face_w)
                    & (v > v_top - reach * face_h))
        forehead = _keep_components(forehead | oval, seed=oval) & ~oval
        # ears: skin beside the face between brow and mouth height, near the oval's sides
        ears = disk_op(ear_zone & (skin | shadow_skin & ~hairish) & ~forehead, cv2.MORPH_OPEN,
                       0.02 * face_w)
        ears = _keep_components(ears, min_area=int(0.004 * face_w * face_h), largest=2)
        # grow a little into shaded skin of the same zone (the ear's rim and bowl)
        ears = disk_op(ears, cv2.MORPH_DILATE, 0.03 * face_w) & ear_zone & (
            ears | skin | shadow_skin)
        # neck: skin (or shadowed skin near the middle) below the mouth, about a face wide,
        # down to neck_depth face heights below the chin, starting right below the chin
        neck_zone = (outside & ~above_mouth & (np.abs(ur) < 0.52 * face_w)
                     & (v < v_chin + self.neck_depth * face_h))
        # right under the chin, in the middle, is the neck in shadow whatever its colour
        # (it can be as dark as the hair) unless it looks like the clothes
        under_chin = ((v < v_chin + 0.18 * face_h) & (np.abs(ur) < 0.35 * face_w)
                      & (cls != _CLOTH))
        neck = neck_zone & (skin | shadow_skin & (np.abs(ur) < 0.4 * face_w) | under_chin)
        neck &= ~ears
        neck = disk_op(neck, cv2.MORPH_OPEN, 0.02 * face_w)
        neck = disk_op(neck, cv2.MORPH_CLOSE, 0.05 * face_w) & neck_zone  # shadow under jaw
        neck = _keep_components(neck, seed=neck_zone & (v < v_chin + 0.3 * face_h))

        # ---- hair: above the mouth every non-skin person pixel (hats and clips included);
        # lower, hair-coloured pixels that hang together with the hair above and fall in the
        # columns where there is hair beside the jaw
        rest = outside & ~forehead & ~ears & ~neck
        hair_top = rest & above_mouth & ~skin
        hair_jaw = rest & ~above_mouth & above_chin & (hairish | (cls == _OTHER))
        band = (hair_top | hair_jaw) & (v > v_mouth - 0.1 * face_h)
        nbins = 64
        lo, hi = float(ur.min()), float(ur.max()) + 1e-6
        bins = np.clip(((ur - lo) / (hi - lo) * nbins).astype(np.int32), 0, nbins - 1)
        cols = np.bincount(bins[band], minlength=nbins) >= max(2.0, 0.01 * face_h)
        grow = max(1, int(round(0.08 * face_w / ((hi - lo) / nbins))))
        cols = np.convolve(cols.astype(np.float32), np.ones(2 * grow + 1), "same") > 0
        hair_low = rest & ~above_chin & hairish & cols[bins]
        hair = disk_op(hair_top | hair_jaw | hair_low, cv2.MORPH_OPEN, 0.012 * face_w)
        hair = _keep_components(hair, seed=hair_top & (dist_oval < 0.12 * face_h),
                                min_area=int(0.0015 * h * w))

        # ---- what is left: skin joined to the oval above the chin (temples, sideburn skin)
        # is face; the rest is body below the mouth and hair above it
        left = rest & ~hair
        side_face = left & skin & above_chin & (v > v_brow) & (dist_oval < 0.1 * face_w)
        side_face = _keep_components(side_face | oval, seed=oval) & ~oval
        left &= ~side_face
        body = left & ~above_mouth
        hair |= left & above_mouth
        # body: drop small islands (segmentation speckles in the background) that touch
        # neither the neck, the hair nor a big body part
        body = _keep_components(body, seed=disk_op(neck | hair, cv2.MORPH_DILATE, 2),
                                min_area=0) | _keep_components(body, min_area=int(0.01 * h * w))

        # ---- hair over the oval (fringe, temples): clearly-not-skin, hair-coloured pixels
        # above the brows that join the hair outside
        if hair_model is not None:
            brow_zone = disk_op(brows, cv2.MORPH_DILATE, 0.03 * face_w)
            fringe = oval & (v < v_brow) & hairish & not_skin & ~brow_zone
            fringe = _keep_components(fringe | hair, seed=hair) & fringe
        else:
            fringe = np.zeros(shape, bool)

        if self.debug is not None:
            self.debug.update(cls=cls, person=person, skin=skin, shadow_skin=shadow_skin,
                              skin_d2=skin_d2, hair=hair, neck=neck, ears=ears, post=post,
                              hair_band=hair_band, cloth_band=cloth_band, forehead=forehead,
                              neck_zone=neck_zone, body=body, side_face=side_face,
                              hair_mass=hair_mass)

        # ---- paint, back to front
        out[body] = Region.BODY
        out[neck] = Region.NECK
        out[hair] = Region.HAIR
        out[ears] = Region.EAR
        out[forehead | side_face | oval] = Region.FACE
        out[fringe] = Region.HAIR
        out[nose] = Region.NOSE
        out[brows] = Region.BROW
        out[eyes] = Region.EYE
        out[lips_outer] = Region.LIP
        # inner mouth: only when the mouth is open. The mesh's inner contour keeps some area
        # even with closed lips, so measure the gap between the inner lip edges instead
        # (closed: < 0.06 of the mouth width on the sample faces; open: > 0.1).
        gap = np.mean([np.linalg.norm(mesh[a] - mesh[b]) for a, b in _LIP_GAP_PAIRS])
        width = float(np.linalg.norm(mesh[MESH_MOUTH_CORNERS[0]] - mesh[MESH_MOUTH_CORNERS[1]]))
        if gap > _OPEN_MOUTH * width and inner.sum() > 4:
            out[inner] = Region.TOOTH
        return out
