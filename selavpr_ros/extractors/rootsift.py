"""Dense RootSIFT: SIFT descriptors on a regular grid, computed with whole-image filters.

OpenCV's ``SIFT.compute`` is slow on a dense grid (bench/PERFORMANCE.md) because it builds a
scale pyramid and resamples a rotated patch per keypoint. A dense grid needs neither
(no rotation, fixed sizes), so descriptors are computed as in VLFeat's dense SIFT (DSIFT):
gradient magnitudes are split into 8 orientation planes with linear interpolation, each plane is
filtered once with a triangular kernel (bilinear spatial binning into cells of ``bin_size``
pixels), and a descriptor is read off as the 4x4 cells around a grid point, weighted by a
Gaussian window. Then SIFT's normalise / clip at 0.2 / normalise, and RootSIFT (Arandjelovic
and Zisserman 2012): L1-normalise and square-root, so that dot products of descriptors equal
the Hellinger kernel of the SIFT histograms. The result has unit L2 norm.

Low-contrast patches (sky, blank walls, night darkness) give noise histograms; they are
flagged invalid by a threshold on the mean gradient magnitude under the patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError

ORIENTATIONS = 8
CELLS = 4  # 4x4 spatial cells per descriptor
DESCRIPTOR_DIM = CELLS * CELLS * ORIENTATIONS  # 128


@dataclass(frozen=True)
class DenseGrid:
    """Where descriptors are computed on a (height, width) grey image.

    Attributes:
        step: pixels between neighbouring grid points.
        bin_sizes: spatial cell sizes in pixels, one descriptor scale each (a descriptor covers
            ``4 * bin_size`` pixels, so 3 and 5 give 12 and 20 pixel patches).
        contrast_threshold: patches whose mean gradient magnitude (grey levels in [0, 1] per
            pixel) is below this are invalid.
    """

    step: int = 8
    bin_sizes: tuple[int, ...] = (3, 5)
    contrast_threshold: float = 0.005

    def __post_init__(self) -> None:
        object.__setattr__(self, "bin_sizes", tuple(int(b) for b in self.bin_sizes))
        if self.step < 1:
            raise ConfigError(f"grid step must be >= 1, got {self.step}")
        if not self.bin_sizes or min(self.bin_sizes) < 1:
            raise ConfigError(f"bin_sizes must be positive, got {self.bin_sizes}")
        if self.contrast_threshold < 0:
            raise ConfigError(
                f"contrast_threshold must be >= 0, got {self.contrast_threshold}"
            )

    def positions(self, height: int, width: int, bin_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-left cell centres (x0, y0) of the descriptors of one scale, as 1-d ranges.

        The four cell centres of a descriptor are ``x0 + i * bin_size`` (i = 0..3); a cell's
        triangular support reaches ``bin_size - 1`` pixels further, which stays inside the image.
        """
        span = 3 * bin_size
        xs = np.arange(bin_size - 1, width - span - bin_size + 1, self.step)
        ys = np.arange(bin_size - 1, height - span - bin_size + 1, self.step)
        return xs, ys

    def subset(self, height: int, width: int, stride: int) -> np.ndarray:
        """Return indices of every ``stride``-th grid point in x and y of each scale (sorted)."""
        keep, offset = [], 0
        for b in self.bin_sizes:
            xs, ys = self.positions(height, width, b)
            iy, ix = np.meshgrid(np.arange(len(ys)), np.arange(len(xs)), indexing="ij")
            chosen = ((iy % stride == 0) & (ix % stride == 0)).ravel()
            keep.append(offset + np.nonzero(chosen)[0])
            offset += len(xs) * len(ys)
        return np.concatenate(keep) if keep else np.zeros(0, np.int64)

    def count(self, height: int, width: int) -> int:
        """Count the descriptors of an image of this size (all scales)."""
        total = 0
        for b in self.bin_sizes:
            xs, ys = self.positions(height, width, b)
            total += len(xs) * len(ys)
        return total


def _orientation_planes(grey: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 8) gradient magnitudes split linearly between the two nearest orientations."""
    if sigma > 0:
        grey = cv2.GaussianBlur(grey, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=1, scale=0.5, borderType=cv2.BORDER_REFLECT)
    magnitude, angle = cv2.cartToPolar(gx, gy)  # angle in [0, 2*pi)
    t = angle * (ORIENTATIONS / (2.0 * np.pi))
    lower = np.floor(t)
    frac = (t - lower).astype(np.float32)
    lower = lower.astype(np.int64) % ORIENTATIONS
    planes = np.zeros((*grey.shape, ORIENTATIONS), np.float32)
    rows, cols = np.indices(grey.shape)
    planes[rows, cols, lower] = magnitude * (1.0 - frac)
    planes[rows, cols, (lower + 1) % ORIENTATIONS] += magnitude * frac
    return planes


def _triangular_kernel(bin_size: int) -> np.ndarray:
    j = np.arange(-(bin_size - 1), bin_size, dtype=np.float32)
    return (1.0 - np.abs(j) / bin_size).astype(np.float32)


def _cell_weights(bin_size: int) -> np.ndarray:
    """(4, 4) Gaussian window over the cells (sigma = half the descriptor width, as SIFT)."""
    offsets = (np.arange(CELLS) - (CELLS - 1) / 2.0) * bin_size
    sigma = CELLS * bin_size / 2.0
    w = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2.0 * sigma**2))
    return w.astype(np.float32)


def dense_rootsift(
    grey: np.ndarray, grid: DenseGrid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense RootSIFT descriptors of a grey image.

    Args:
        grey: (H, W) uint8 or float32 image (float images in [0, 1]).
        grid: step, scales and contrast threshold.

    Returns:
        descriptors (N, 128) float32 with unit L2 norm (zeros where invalid), keypoints
        (N, 2) float32 (x, y) descriptor centres in the pixels of ``grey``, and valid (N,)
        bool; N = ``grid.count(H, W)``, scales in the order of ``grid.bin_sizes``, rows
        before columns within a scale.
    """
    if grey.ndim != 2:
        raise ValueError(f"expected a (H, W) grey image, got shape {grey.shape}")
    image = grey.astype(np.float32) / 255.0 if grey.dtype == np.uint8 else grey.astype(np.float32)
    height, width = image.shape
    all_desc, all_kp, all_valid = [], [], []
    for b in grid.bin_sizes:
        xs, ys = grid.positions(height, width, b)
        n = len(xs) * len(ys)
        if n == 0:
            continue
        planes = _orientation_planes(image, sigma=b / 6.0)  # VLFeat PHOW smoothing
        kernel = _triangular_kernel(b)
        binned = cv2.sepFilter2D(planes, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
        binned = binned.reshape(height, width, ORIENTATIONS)
        weights = _cell_weights(b)
        cells = np.empty((len(ys), len(xs), CELLS, CELLS, ORIENTATIONS), np.float32)
        for i in range(CELLS):
            for j in range(CELLS):
                block = binned[ys[:, None] + i * b, xs[None, :] + j * b]  # (ny, nx, 8)
                cells[:, :, i, j] = block * weights[i, j]
        raw = cells.reshape(n, DESCRIPTOR_DIM)
        # mean gradient magnitude under the window: each cell sums b*b pixels' magnitudes
        contrast = raw.sum(axis=1) / (float(weights.sum()) * b * b)
        all_desc.append(_rootsift(raw))
        all_valid.append(contrast >= grid.contrast_threshold)
        gx, gy = np.meshgrid(xs + 1.5 * b, ys + 1.5 * b)
        all_kp.append(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32))
    if not all_desc:
        empty = np.zeros((0, DESCRIPTOR_DIM), np.float32)
        return empty, np.zeros((0, 2), np.float32), np.zeros(0, np.bool_)
    desc = np.concatenate(all_desc)
    valid = np.concatenate(all_valid)
    desc[~valid] = 0.0
    return desc, np.concatenate(all_kp), valid


def _rootsift(raw: np.ndarray) -> np.ndarray:
    """SIFT normalisation (L2, clip 0.2, L2), then L1-normalise and square-root."""
    eps = 1e-12
    d = raw / (np.linalg.norm(raw, axis=1, keepdims=True) + eps)
    np.minimum(d, 0.2, out=d)
    d /= np.linalg.norm(d, axis=1, keepdims=True) + eps
    d /= d.sum(axis=1, keepdims=True) + eps
    np.sqrt(d, out=d)
    return d


def rootsift_from_sift(sift: np.ndarray) -> np.ndarray:
    """RootSIFT of standard SIFT descriptors (e.g. OpenCV's): L1-normalise, square-root."""
    d = np.asarray(sift, np.float32)
    d = d / (np.abs(d).sum(axis=1, keepdims=True) + 1e-12)
    return np.sqrt(d)
