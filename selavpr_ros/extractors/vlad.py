"""VLAD global descriptors (Jegou et al. 2010) over a vocabulary learned by k-means.

Aggregation follows "All about VLAD" (Arandjelovic and Zisserman 2013): residuals to the nearest
centroid are summed per centroid, each centroid's sum is L2-normalised (intra-normalisation,
which stops bursty repeated structure such as windows or foliage from dominating), then the
signed square root (power normalisation) and a global L2 normalisation.
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from selavpr_ros.errors import ConfigError

log = logging.getLogger(__name__)


def fit_vocabulary(
    descriptors: np.ndarray, size: int, *, iterations: int = 20, seed: int = 0,
    restarts: int = 1,
) -> np.ndarray:
    """k-means centroids (size, C) float32 of (N, C) descriptors; deterministic for a seed.

    ``restarts`` > 1 runs k-means from that many random initialisations and keeps the one with
    the lowest error (k-means only finds a local optimum).

    Raises:
        ConfigError: fewer descriptors than centroids.
    """
    data = np.ascontiguousarray(descriptors, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"descriptors must be (N, C), got {data.shape}")
    if size < 1:
        raise ConfigError(f"vocabulary size must be >= 1, got {size}")
    if len(data) < size:
        raise ConfigError(
            f"cannot learn {size} visual words from {len(data)} descriptors: give more or "
            "larger images, or a smaller vocabulary"
        )
    kmeans = faiss.Kmeans(
        data.shape[1], size, niter=iterations, seed=seed, verbose=False, nredo=restarts,
        max_points_per_centroid=max(256, -(-len(data) // size)),
    )
    kmeans.train(data)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def assign(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of every descriptor, first on ties."""
    # |d - c|^2 = |d|^2 - 2 d.c + |c|^2; |d|^2 is the same for every centroid
    scores = descriptors @ centroids.T - 0.5 * np.einsum("kc,kc->k", centroids, centroids)
    return np.argmax(scores, axis=1)


def vlad(descriptors: np.ndarray, centroids: np.ndarray, *, power_norm: bool = True) -> np.ndarray:
    """Compute the (K * C,) float32 VLAD vector of (N, C) descriptors, unit L2 norm.

    An image with no descriptors gets the all-equal unit vector, so that it still has a valid
    (if uninformative) descriptor instead of NaNs.
    """
    k, channels = centroids.shape
    dim = k * channels
    if len(descriptors) == 0:
        return np.full(dim, 1.0 / np.sqrt(dim), np.float32)
    d = np.asarray(descriptors, np.float32)
    words = assign(d, centroids)
    # sum of residuals per word = (sum of its descriptors) - count * centroid, as one matmul
    onehot = np.zeros((len(d), k), np.float32)
    onehot[np.arange(len(d)), words] = 1.0
    counts = onehot.sum(axis=0)
    sums = (onehot.T @ d).astype(np.float64) - counts[:, None] * centroids
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    sums = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    v = sums.ravel()
    if power_norm:
        v = np.sign(v) * np.sqrt(np.abs(v))
    total = np.linalg.norm(v)
    if total == 0:
        return np.full(dim, 1.0 / np.sqrt(dim), np.float32)
    return (v / total).astype(np.float32)
