"""VLAD aggregation and vocabulary learning, against a loop-by-loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.extractors.vlad import assign, fit_vocabulary, vlad


def reference_vlad(desc: np.ndarray, centroids: np.ndarray, power_norm: bool) -> np.ndarray:
    """Textbook VLAD written out with loops (float64)."""
    k, c = centroids.shape
    sums = np.zeros((k, c))
    for d in desc.astype(np.float64):
        word = int(np.argmin([np.sum((d - cc) ** 2) for cc in centroids.astype(np.float64)]))
        sums[word] += d - centroids[word]
    for word in range(k):
        n = np.linalg.norm(sums[word])
        if n > 0:
            sums[word] /= n
    v = sums.ravel()
    if power_norm:
        v = np.sign(v) * np.sqrt(np.abs(v))
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("power_norm", [True, False])
def test_vlad_matches_the_reference(power_norm: bool) -> None:
    rng = np.random.default_rng(3)
    desc = rng.random((300, 16)).astype(np.float32)
    centroids = rng.random((8, 16)).astype(np.float32)
    out = vlad(desc, centroids, power_norm=power_norm)
    assert out.dtype == np.float32 and out.shape == (8 * 16,)
    assert np.allclose(out, reference_vlad(desc, centroids, power_norm), atol=1e-6)
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-6)


def test_words_without_descriptors_stay_zero() -> None:
    centroids = np.array([[0.0, 0.0], [10.0, 10.0]], np.float32)
    desc = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)  # both nearest to word 0
    out = vlad(desc, centroids, power_norm=False).reshape(2, 2)
    assert np.all(out[1] == 0)
    # residual sum (1, 3), intra-normalised to (1, 3)/sqrt(10), and that is already unit length
    assert np.allclose(out[0], np.array([1.0, 3.0]) / np.sqrt(10.0), atol=1e-6)


def test_no_descriptors_give_a_valid_unit_vector() -> None:
    out = vlad(np.zeros((0, 4), np.float32), np.ones((3, 4), np.float32))
    assert out.shape == (12,) and np.isclose(np.linalg.norm(out), 1.0) and np.all(out > 0)


def test_assign_picks_the_nearest_centroid() -> None:
    centroids = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 5.0]], np.float32)
    desc = np.array([[0.4, 0.0], [0.6, 0.0], [0.0, 3.0], [9.0, 9.0]], np.float32)
    assert assign(desc, centroids).tolist() == [0, 1, 2, 2]


def test_vocabulary_finds_separated_clusters_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32)
    data = np.concatenate([c + 0.1 * rng.standard_normal((200, 3)) for c in centres])
    data = data.astype(np.float32)
    found = fit_vocabulary(data, 4, seed=1, restarts=8)  # k-means alone can get stuck
    # every true centre has a learned centroid within 0.1
    dist = np.linalg.norm(found[:, None, :] - centres[None], axis=2)
    assert np.all(dist.min(axis=0) < 0.1)
    assert np.array_equal(found, fit_vocabulary(data, 4, seed=1, restarts=8))


def test_too_few_descriptors_for_the_vocabulary() -> None:
    with pytest.raises(ConfigError, match="cannot learn 10 visual words from 5"):
        fit_vocabulary(np.zeros((5, 3), np.float32), 10)
