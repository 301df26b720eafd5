"""Offline face parser from MediaPipe models: face-mesh polygons + selfie segmentation + colour.

The inner face (skin, brows, eyes, nose, lips, inner mouth) is drawn from the 468-point mesh.
Person pixels outside the mesh's face oval (selfie segmentation) are split into hair, ears,
neck, body, and the skin above the oval's forehead edge, from their position relative to the
face and from Gaussian colour models in Lab fitted on the crop itself:

* skin   - sampled from the cheeks (inside the oval, away from the features);
* hair   - person pixels in a band just outside the upper oval that do not look like skin;
* clothes - person pixels near the bottom of the crop, well below the chin, not skin.

Each person pixel gets the posterior of these models (blurred a little for spatial
coherence), then the zone rules of ``MediaPipeParser.__call__`` turn them into HeSer regions.
No learned parsing network is involved, so the result is approximate: see the module's tests
and the notes in ``__call__``.
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
    MESH_NOSE,
    MESH_RIGHT_BROW,
    MESH_RIGHT_EYE,
    MediaPipeFace,
    SelfieSegmenter,
    _as_rgb,
)

#: every region this parser can write (no HAT, no GLASSES)
PRODUCED_REGIONS: frozenset[Region] = frozenset({
    Region.BACKGROUND, Region.FACE, Region.BROW, Region.EYE, Region.NOSE, Region.LIP,
    Region.TOOTH, Region.EAR, Region.HAIR, Region.NECK, Region.BODY,
})

# Colour classes
_SKIN, _HAIR, _CLOTH, _OTHER = 0, 1, 2, 3
_MIN_SAMPLES = 40
# Squared Mahalanobis distance (3 dof) under which a colour is "skin-like" when the other
# models are unavailable, and beyond which a sample is too unlike skin to be skin.
_SKIN_CHI2 = 11.3  # 99 %
_FAR_CHI2 = 16.0
_OUTLIER_CHI2 = 30.0


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
        x = samples.astype(np.float64)
        self.mean, self.icov, self.logdet = self._fit(x)
        d2 = self.maha(x)
        keep = d2 <= np.quantile(d2, 0.9)
        if keep.sum() >= _MIN_SAMPLES:
            self.mean, self.icov, self.logdet = self._fit(x[keep])

    @staticmethod
    def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False) + np.diag([9.0, 4.0, 4.0])  # floor: JPEG noise, shading
        sign, logdet = np.linalg.slogdet(cov)
        return mean, np.linalg.inv(cov), float(logdet)

    def maha(self, x: np.ndarray) -> np.ndarray:
        d = x - self.mean
        return np.einsum("ni,ij,nj->n", d, self.icov, d)

    def loglik(self, x: np.ndarray) -> np.ndarray:
        return -0.5 * (self.maha(x) + self.logdet)


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
        rgb = _as_rgb(crop_rgb)
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

        oval = poly(MESH_FACE_OVAL)
        eyes = poly(MESH_RIGHT_EYE) | poly(MESH_LEFT_EYE)
        brows = poly(MESH_RIGHT_BROW) | poly(MESH_LEFT_BROW)
        nose = poly(MESH_NOSE)
        lips_outer = poly(MESH_LIPS_OUTER)
        inner_pts = mesh[list(MESH_LIPS_INNER)].astype(np.float32)
        inner = poly(MESH_LIPS_INNER)

        # ---- face frame: origin between the eyes, u along the eye line, v down the face
        eye_r = mesh[list(MESH_RIGHT_EYE)].mean(0)
        eye_l = mesh[list(MESH_LEFT_EYE)].mean(0)
        ex = eye_l - eye_r
        if ex[0] < 0:  # keep u increasing to the image right for an upright face
            ex = -ex
        ex /= max(np.linalg.norm(ex), 1e-6)
        ey = np.array([-ex[1], ex[0]])
        origin = (eye_r + eye_l) / 2
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        u = (xx - origin[0]) * ex[0] + (yy - origin[1]) * ex[1]
        v = (xx - origin[0]) * ey[0] + (yy - origin[1]) * ey[1]
        mu = (mesh - origin) @ ex
        mv = (mesh - origin) @ ey
        v_top, v_chin = mv[10], mv[152]
        v_mouth = (mv[61] + mv[291]) / 2
        face_h = max(v_chin - v_top, 1.0)
        face_w = max(abs(mu[454] - mu[234]), 1.0)
        u_mid = (mu[454] + mu[234]) / 2
        ur = u - u_mid
        v_brow = float(np.mean(mv[list(MESH_RIGHT_BROW) + list(MESH_LEFT_BROW)]))

        # ---- colour models in Lab on a lightly smoothed crop
        smooth = cv2.GaussianBlur(rgb, (0, 0), 1.0)
        lab = cv2.cvtColor(smooth.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3)

        features = cv2.dilate((eyes | brows | nose | lips_outer).astype(np.uint8),
                              _disk(0.04 * face_w)).astype(bool)
        inner_oval = cv2.erode(oval.astype(np.uint8), _disk(0.05 * face_w)).astype(bool)
        cheeks = inner_oval & ~features & (v > 0.1 * v_mouth) & (v < v_mouth)
        if cheeks.sum() < _MIN_SAMPLES:
            cheeks = inner_oval & ~features
        if cheeks.sum() < _MIN_SAMPLES:
            cheeks = oval
        skin_model = _Gaussian(lab[cheeks.ravel()]) if cheeks.sum() >= 5 else None

        dist_oval = cv2.distanceTransform((~oval).astype(np.uint8), cv2.DIST_L2, 3)
        outside = person & ~oval
        skin_d2 = np.full(h * w, np.inf)
        if skin_model is not None:
            cand = (person | oval).ravel()
            skin_d2[cand] = skin_model.maha(lab[cand])
        skin_d2 = skin_d2.reshape(shape)
        not_skin = skin_d2 > _FAR_CHI2

        hair_band = outside & (v < 0.5 * v_mouth) & (dist_oval < 0.25 * face_h) & not_skin
        hair_model = _Gaussian(lab[hair_band.ravel()]) if hair_band.sum() >= _MIN_SAMPLES else None

        low = v > v_chin + self.neck_depth * face_h
        not_hair = np.ones(shape, bool)
        if hair_model is not None:
            cand = (person & low).ravel()
            hair_d2 = np.zeros(h * w)
            hair_d2[cand] = hair_model.maha(lab[cand])
            not_hair = hair_d2.reshape(shape) > _SKIN_CHI2
        cloth_band = person & low & (yy > h - 0.15 * h) & not_skin & not_hair
        if cloth_band.sum() < _MIN_SAMPLES:
            cloth_band = person & low & not_skin & not_hair
        cloth_model = (_Gaussian(lab[cloth_band.ravel()]) if cloth_band.sum() >= _MIN_SAMPLES
                       else None)

        # ---- posteriors of skin / hair / clothes for every candidate pixel
        models = [skin_model, hair_model, cloth_model]
        cand = (person | oval).ravel()
        logp = np.full((4, h * w), -1e9)
        x = lab[cand]
        for k, model in enumerate(models):
            if model is not None:
                logp[k, cand] = model.loglik(x)
        # an outlier class: colours none of the models explains (clothes when no clothes
        # were sampled, props); it counts as clothes below the chin and hair above
        logdets = [m.logdet for m in models if m is not None]
        logp[_OTHER, cand] = -0.5 * (_OUTLIER_CHI2 + (np.median(logdets) if logdets else 0.0))
        logp = logp.reshape(4, h, w)
        # Position priors: hair gets rarer far below the chin, clothes above the mouth.
        below = np.clip((v - v_chin) / face_h, 0, None)
        logp[_HAIR] -= 3.0 * np.clip(below - 0.3, 0, None) + 2.0 * (np.abs(ur) < 0.3 * face_w) * (
            v > v_chin)
        logp[_CLOTH] -= 4.0 * np.clip((v_chin - v) / face_h, 0, None)
        if skin_model is None:
            logp[_SKIN] = np.where(skin_d2 < _SKIN_CHI2, 0.0, -1e9)
        logp -= logp.max(0, keepdims=True)
        post = np.exp(logp)
        post /= post.sum(0, keepdims=True)
        sigma = max(0.8, 0.008 * face_w)
        post = np.stack([cv2.GaussianBlur(p.astype(np.float32), (0, 0), sigma) for p in post])
        cls = post.argmax(0)
        skin = (cls == _SKIN) & (skin_d2 < 4 * _FAR_CHI2)
        hairish = cls == _HAIR
        clothish = (cls == _CLOTH) | (cls == _OTHER) | ((cls == _SKIN) & ~skin)

        # ---- zones outside the oval
        zone_above = v < v_top + 0.35 * face_h  # well above the eyes: scalp / forehead
        # skin right above the oval's top edge: forehead / bald scalp (connected to the oval)
        forehead = (outside & skin & (post[_SKIN] > 0.7) & (skin_d2 < _SKIN_CHI2)
                    & (v < 0.25 * v_mouth) & (np.abs(ur) < 0.55 * face_w)
                    & (v > v_top - 0.3 * face_h))
        forehead = _keep_components(forehead | oval, seed=oval) & ~oval
        ear_zone = (outside & (v > v_brow) & (v < v_mouth + 0.1 * face_h)
                    & (dist_oval < 0.22 * face_w) & (np.abs(ur) > 0.3 * face_w))
        ears = ear_zone & skin & ~forehead
        ears = cv2.morphologyEx(ears.astype(np.uint8), cv2.MORPH_OPEN, _disk(0.02 * face_w))
        ears = _keep_components(ears.astype(bool), min_area=int(0.002 * face_w * face_h * 4),
                                largest=2)
        neck_zone = (outside & (v > v_mouth) & (np.abs(ur) < 0.52 * face_w)
                     & (v < v_chin + self.neck_depth * face_h))
        neck = neck_zone & skin & ~ears
        neck = cv2.morphologyEx(neck.astype(np.uint8), cv2.MORPH_OPEN, _disk(0.02 * face_w))
        chin_seed = neck_zone & (v < v_chin + 0.15 * face_h) & (dist_oval < 0.06 * face_h + 2)
        neck = _keep_components(neck.astype(bool), seed=chin_seed | (dist_oval < 2.5))

        rest = outside & ~forehead & ~ears & ~neck
        above_chin = v < v_chin
        # Above the chin every non-skin person pixel is hair (hats, hair clips included);
        # below it, hair where the colour says hair, body otherwise.
        hair_above = rest & above_chin & ~skin
        # Long hair falls from the sides of the head: below the chin, hair is allowed only in
        # the columns (along the eye line) where there is hair between mouth and chin height.
        band = hair_above & (v > v_mouth - 0.05 * face_h)
        nbins = 64
        lo, hi = float(ur.min()), float(ur.max()) + 1e-6
        bins = np.clip(((ur - lo) / (hi - lo) * nbins).astype(np.int32), 0, nbins - 1)
        cols = np.bincount(bins[band], minlength=nbins) >= max(2.0, 0.01 * face_h)
        grow = max(1, int(round(0.08 * face_w / ((hi - lo) / nbins))))
        cols = np.convolve(cols.astype(np.float32), np.ones(2 * grow + 1), "same") > 0
        hair_below = rest & ~above_chin & hairish & cols[bins]
        hair = hair_above | hair_below
        # skin outside every zone: beside the face above the chin (temples, ears the zone
        # missed) is face-adjacent -> hair/face ambiguity: call it hair only when not skin
        side_skin = rest & skin & above_chin & ~hair
        # hair must hang together with the head: drop hair islands far from the oval
        head_seed = (dist_oval < 0.12 * face_h) & (v < v_chin - 0.1 * face_h)
        hair = cv2.morphologyEx(hair.astype(np.uint8), cv2.MORPH_OPEN, _disk(0.012 * face_w))
        hair = _keep_components(hair.astype(bool), seed=head_seed,
                                min_area=int(0.0015 * h * w))
        body = rest & ~hair & ~side_skin & ~above_chin
        # skin beside the head above the chin that is no ear: face (temples / sideburn skin)
        # when it touches the oval, body (hands, shoulders) otherwise
        side_face = _keep_components(side_skin | oval, seed=oval) & side_skin
        body |= rest & ~hair & ~side_face & ~above_chin
        stray = rest & ~hair & ~side_face & ~body  # non-skin or skin islands above the chin
        hair |= stray & zone_above
        body |= stray & ~zone_above

        # ---- hair over the oval (fringe, temples): clearly-not-skin, hair-coloured pixels
        # above the brows that join the hair outside
        if hair_model is not None:
            fringe = (oval & (v < v_brow) & hairish & (skin_d2 > _FAR_CHI2)
                      & ~cv2.dilate(brows.astype(np.uint8), _disk(0.03 * face_w)).astype(bool))
            fringe = _keep_components(fringe | hair, seed=hair) & fringe
        else:
            fringe = np.zeros(shape, bool)

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
        mouth_area = abs(float(cv2.contourArea(inner_pts)))
        lip_area = max(abs(float(cv2.contourArea(mesh[list(MESH_LIPS_OUTER)].astype(np.float32)))),
                       1.0)
        if mouth_area > 0.04 * lip_area and mouth_area > 4.0:
            out[inner] = Region.TOOTH
        return out
