"""Crop windows from five facial points, their temporal smoothing, and the warp itself.

The window follows the FFHQ alignment rule (eye line and eye-to-mouth vector give the
orientation and size), widened by ``scale`` and shifted towards the mouth by ``center_shift``
so that the crop holds the whole head, hair and some shoulders, as the paper's crops do.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d


@dataclass(frozen=True)
class CropWindow:
    """A rotated square in source pixels: centre, half side, and angle of its x axis (radians)."""

    cx: float
    cy: float
    half: float
    angle: float

    def as_list(self) -> list[float]:
        return [self.cx, self.cy, self.half, self.angle]


def window_from_points(five_points: np.ndarray, scale: float, center_shift: float) -> CropWindow:
    """Window from [left eye, right eye, nose, left mouth, right mouth] (image left/right)."""
    pts = np.asarray(five_points, dtype=np.float64)
    eye_mid = (pts[0] + pts[1]) / 2
    mouth_mid = (pts[3] + pts[4]) / 2
    eye_to_eye = pts[1] - pts[0]
    eye_to_mouth = mouth_mid - eye_mid
    # The x axis blends the eye line with the normal of the eye-to-mouth vector, which keeps
    # the orientation stable for profile views where the eye line degenerates.
    x_axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    half = max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth)) * scale
    center = eye_mid + center_shift * eye_to_mouth
    return CropWindow(float(center[0]), float(center[1]), float(half),
                      float(np.arctan2(x_axis[1], x_axis[0])))


def smooth_windows(windows: list[CropWindow], sigma: float) -> list[CropWindow]:
    """Gaussian smoothing over a sequence of consecutive frames (sigma in frames)."""
    if sigma <= 0 or len(windows) < 2:
        return list(windows)
    params = np.array([[w.cx, w.cy, np.log(w.half), np.cos(w.angle), np.sin(w.angle)]
                       for w in windows])
    smooth = gaussian_filter1d(params, sigma, axis=0, mode="nearest")
    return [CropWindow(float(p[0]), float(p[1]), float(np.exp(p[2])), float(np.arctan2(p[4], p[3])))
            for p in smooth]


def crop_matrix(window: CropWindow, size: int) -> np.ndarray:
    """2x3 affine taking source pixels to crop pixels."""
    s = size / (2.0 * window.half)
    c, si = np.cos(window.angle), np.sin(window.angle)
    linear = s * np.array([[c, si], [-si, c]])  # scaled R^T
    offset = np.array([size / 2.0, size / 2.0]) - linear @ np.array([window.cx, window.cy])
    return np.hstack([linear, offset[:, None]])


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2|3) points; a z column is scaled like x and y."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    out[:, :2] = pts[:, :2] @ matrix[:, :2].T + matrix[:, 2]
    if pts.shape[1] > 2:
        out[:, 2:] = pts[:, 2:] * np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    return out.astype(np.float32)


def warp_crop(image: np.ndarray, window: CropWindow, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the window out of ``image`` as a size x size crop; returns (crop, source->crop matrix).

    Only the window's bounding region is resampled, and it is first area-downscaled when the
    crop is much smaller than the source, so huge frames neither alias nor cost a full warp.
    Pixels outside the source are black.
    """
    matrix = crop_matrix(window, size)
    h, w = image.shape[:2]
    corners = _window_corners(window)
    x0, y0 = np.floor(corners.min(0)).astype(int) - 2
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8), matrix
    roi = image[y0:y1, x0:x1]
    shrink = min(1.0, size / (2.0 * window.half))
    if shrink < 0.5:
        roi = cv2.resize(roi, (max(1, round(roi.shape[1] * shrink)),
                               max(1, round(roi.shape[0] * shrink))), interpolation=cv2.INTER_AREA)
        ratio = np.array([roi.shape[1] / (x1 - x0), roi.shape[0] / (y1 - y0)])
    else:
        ratio = np.ones(2)
    # source = roi_pixel / ratio + origin
    roi_matrix = matrix.copy()
    roi_matrix[:, :2] = matrix[:, :2] / ratio
    roi_matrix[:, 2] = matrix[:, :2] @ np.array([x0, y0]) + matrix[:, 2]
    crop = cv2.warpAffine(roi, roi_matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return crop, matrix


def inside_fraction(window: CropWindow, image_shape: tuple[int, ...], grid: int = 32) -> float:
    """Share of the crop that lies inside the source image (the rest is black border)."""
    steps = (np.arange(grid) + 0.5) / grid * 2 - 1
    u, v = np.meshgrid(steps, steps)
    c, s = np.cos(window.angle), np.sin(window.angle)
    x = window.cx + window.half * (c * u - s * v)
    y = window.cy + window.half * (s * u + c * v)
    h, w = image_shape[:2]
    return float(np.mean((x >= 0) & (x < w) & (y >= 0) & (y < h)))


def _window_corners(window: CropWindow) -> np.ndarray:
    c, s = np.cos(window.angle), np.sin(window.angle)
    x_axis, y_axis = window.half * np.array([c, s]), window.half * np.array([-s, c])
    center = np.array([window.cx, window.cy])
    return np.array([center - x_axis - y_axis, center + x_axis - y_axis,
                     center + x_axis + y_axis, center - x_axis + y_axis])


def paste_crop(image: np.ndarray, crop: np.ndarray, alpha: np.ndarray,
               matrix: np.ndarray) -> np.ndarray:
    """The inverse of :func:`warp_crop`: blend ``crop`` (SxSx3 uint8) back into a copy of
    ``image`` through the source->crop ``matrix``, weighted by ``alpha`` (SxS in [0, 1]).

    Only the bounding region of the crop in the image is resampled, so pasting into a 4K frame
    costs about as much as into the crop; outside the crop the image is untouched.
    """
    size = crop.shape[0]
    corners_crop = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    inverse = cv2.invertAffineTransform(matrix)
    corners = corners_crop @ inverse[:, :2].T + inverse[:, 2]
    h, w = image.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [w, h])
    out = image.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    roi_matrix = matrix.copy()  # ROI pixel -> crop pixel
    roi_matrix[:, 2] = matrix[:, :2] @ np.array([x0, y0]) + matrix[:, 2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    size_roi = (int(x1 - x0), int(y1 - y0))
    pasted = cv2.warpAffine(crop, roi_matrix, size_roi, flags=flags)
    weight = cv2.warpAffine(alpha.astype(np.float32), roi_matrix, size_roi, flags=flags,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    roi = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (roi + weight * (pasted.astype(np.float32) - roi)).round().astype(
        np.uint8)
    return out
