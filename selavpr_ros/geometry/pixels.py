"""Where a local feature sits in the original image, for either kind of extractor.

SelaVPR's local features form a G x G grid (61 x 61 at 224 x 224 input) computed from the
image resized to the network input without keeping the aspect ratio. The ViT cuts the input into
14-pixel patches (token t centred on pixel 14 t + 6.5), and LocalAdapt's two stride-2 transposed
convolutions (kernel 3, padding 1) place output cell m on input position m / 2 twice over, so
grid cell m sits on token coordinate m / 4, i.e. input pixel ``3.5 m + 6.5`` (G = 4 g - 3 for g
tokens). The classical extractor returns keypoints already in the original image's pixels.
Pixel centres map through a resize as ``(x + 0.5) * scale - 0.5``.
"""

from __future__ import annotations

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.extractors.base import ExtractorInfo

PATCH_SIZE = 14  # DINOv2 patch size


def grid_input_size(grid_hw: tuple[int, int], patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """(height, width) of the network input that gives a ``grid_hw`` local-feature grid."""
    out = []
    for g in grid_hw:
        if g < 1 or (g + 3) % 4:
            raise ConfigError(f"a local grid side must be 4 * tokens - 3, got {grid_hw}")
        out.append((g + 3) // 4 * patch_size)
    return out[0], out[1]


def grid_pixels(grid_hw: tuple[int, int], image_hw: tuple[int, int],
                indices: np.ndarray | None = None,
                patch_size: int = PATCH_SIZE) -> np.ndarray:
    """(N, 2) float64 (x, y) pixel centres in the original image of grid features.

    Args:
        grid_hw: the local-feature grid (G_h, G_w), row-major feature order.
        image_hw: the original image's (height, width).
        indices: flat feature indices (default: all, in order).
    """
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    in_h, in_w = grid_input_size((gh, gw), patch_size)
    idx = np.arange(gh * gw) if indices is None else np.asarray(indices, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= gh * gw):
        raise ConfigError(f"feature index out of range for a {gh}x{gw} grid")
    rows, cols = np.divmod(idx, gw)
    step = patch_size / 4.0
    offset = (patch_size - 1) / 2.0
    x_in = cols * step + offset
    y_in = rows * step + offset
    h, w = image_hw
    x = (x_in + 0.5) * (w / in_w) - 0.5
    y = (y_in + 0.5) * (h / in_h) - 0.5
    return np.stack([x, y], axis=1).astype(np.float64)


def feature_pixels(info: ExtractorInfo, image_hw: tuple[int, int],
                   indices: np.ndarray | None = None,
                   keypoints: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) pixel coordinates in the original image of one image's local features.

    Args:
        info: the extractor that made the features (grid or keypoints).
        image_hw: the original image's (height, width) (used for grids).
        indices: which features (flat indices; default all).
        keypoints: (L, 2) keypoints of this image, required for keypoint extractors.
    """
    if info.local_grid is not None:
        return grid_pixels(info.local_grid, image_hw, indices)
    if not info.has_keypoints:
        raise ConfigError(f"extractor {info.name!r} gives neither a grid nor keypoints")
    if keypoints is None:
        raise ConfigError(f"extractor {info.name!r} needs the image's keypoints")
    kp = np.asarray(keypoints, np.float64).reshape(-1, 2)
    return kp if indices is None else kp[np.asarray(indices, np.int64)]
