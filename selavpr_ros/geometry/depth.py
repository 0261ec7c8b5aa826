"""3-D points of local features from a depth image registered to the colour camera.

Depth comes as ``16UC1`` (millimetres, 0 = no reading) or ``32FC1`` (metres; NaN, +-inf or
<= 0 = no reading), the encodings REP 118 defines. A registered depth image has the colour
image's geometry, possibly at another resolution with the same aspect ratio (a depth camera at
half resolution): a feature's pixel is mapped into the depth image through the resize and the
nearest depth pixel is read (interpolating across a depth edge would invent a surface).

Points are returned in the colour camera's optical frame (x right, y down, z forward), float32,
NaN where the depth is missing or out of range; they fit in float16 (range limit 100 m: fp16 has
11 significant bits, i.e. about 3 cm resolution at 50 m).
"""

from __future__ import annotations

import numpy as np

from selavpr_ros.errors import SelaVPRError
from selavpr_ros.geometry.camera import CameraModel

DEPTH_ENCODINGS = ("16UC1", "32FC1")
MAX_DEPTH_M = 100.0


class DepthImageError(SelaVPRError, ValueError):
    """A depth image has the wrong encoding, data type or size."""


def depth_in_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W) float32 metres, NaN where there is no reading."""
    if encoding not in DEPTH_ENCODINGS:
        raise DepthImageError(
            f"depth encoding must be 16UC1 (mm) or 32FC1 (m), got {encoding!r}"
        )
    array = np.asarray(depth)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise DepthImageError(f"depth image must be (H, W), got shape {array.shape}")
    expected = np.uint16 if encoding == "16UC1" else np.float32
    if array.dtype != expected:
        raise DepthImageError(
            f"{encoding} depth must be {np.dtype(expected).name}, got {array.dtype}"
        )
    if encoding == "16UC1":
        metres = array.astype(np.float32) / 1000.0
        metres[array == 0] = np.nan
        return metres
    metres = array.astype(np.float32, copy=True)
    metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    return metres


def check_depth_size(depth_hw: tuple[int, int], image_hw: tuple[int, int],
                     tolerance: float = 0.01) -> None:
    """Refuse a depth image whose aspect ratio differs from the colour image's."""
    dh, dw = depth_hw
    h, w = image_hw
    if dh < 1 or dw < 1 or abs((dw / w) / (dh / h) - 1.0) > tolerance:
        raise DepthImageError(
            f"depth image {dw}x{dh} is not registered to the {w}x{h} colour image "
            "(sizes differ in aspect ratio)"
        )


def feature_points(
    depth: np.ndarray,
    encoding: str,
    pixels: np.ndarray,
    camera: CameraModel,
    max_depth_m: float = MAX_DEPTH_M,
) -> np.ndarray:
    """Get (N, 3) float32 points (colour optical frame) at (N, 2) colour-image pixels.

    Rows are NaN where the depth is missing, beyond ``max_depth_m`` or the pixel is outside
    the image.
    ``camera`` is the colour camera (its size is the colour image's size).
    """
    metres = depth_in_metres(depth, encoding)
    dh, dw = metres.shape
    check_depth_size((dh, dw), (camera.height, camera.width))
    px = np.asarray(pixels, np.float64).reshape(-1, 2)
    u = np.rint((px[:, 0] + 0.5) * (dw / camera.width) - 0.5).astype(np.int64)
    v = np.rint((px[:, 1] + 0.5) * (dh / camera.height) - 0.5).astype(np.int64)
    inside = (u >= 0) & (u < dw) & (v >= 0) & (v < dh)
    z = np.full(len(px), np.nan, np.float64)
    z[inside] = metres[v[inside], u[inside]]
    z[z > max_depth_m] = np.nan
    rays = camera.normalized(px)
    points = np.empty((len(px), 3), np.float64)
    points[:, :2] = rays * z[:, None]
    points[:, 2] = z
    return points.astype(np.float32)
