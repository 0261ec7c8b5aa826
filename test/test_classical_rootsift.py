"""Dense RootSIFT: orientation binning on hand-made edges, normalisation, grid, masks."""

from __future__ import annotations

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.extractors.rootsift import DenseGrid, dense_rootsift, rootsift_from_sift

GRID = DenseGrid(step=8, bin_sizes=(4,), contrast_threshold=0.001)


def edge_image(direction: str) -> np.ndarray:
    """Make a 64x64 step edge through the centre: dark -> bright along ``direction``."""
    img = np.zeros((64, 64), np.uint8)
    if direction == "+x":
        img[:, 32:] = 200
    elif direction == "+y":
        img[32:, :] = 200
    elif direction == "-x":
        img[:, :32] = 200
    return img


@pytest.mark.parametrize("direction, orientation", [("+x", 0), ("+y", 2), ("-x", 4)])
def test_edge_gradient_lands_in_its_orientation_bin(direction: str, orientation: int) -> None:
    # Angles are measured from +x towards +y (image rows grow downwards), 8 bins of 45 deg:
    # brightness growing along +x is angle 0, along +y 90 deg (bin 2), along -x 180 deg (bin 4).
    desc, kp, valid = dense_rootsift(edge_image(direction), GRID)
    centre = np.argmin(np.linalg.norm(kp - 32.0, axis=1))
    assert valid[centre]
    hist = desc[centre].reshape(4, 4, 8) ** 2  # RootSIFT squared is the L1-normalised histogram
    by_orientation = hist.sum(axis=(0, 1))
    assert by_orientation[orientation] > 0.99


def test_descriptors_are_unit_and_nonnegative_and_the_grid_is_as_configured() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 130), dtype=np.uint8)
    grid = DenseGrid(step=8, bin_sizes=(3, 5))
    desc, kp, valid = dense_rootsift(img, grid)
    # scale b: cell centres x0 + i*b, x0 from b-1 while x0 + 4b - 1 <= width - 1
    expected = 0
    for b in (3, 5):
        nx = len(range(b - 1, 130 - 4 * b + 1, 8))
        ny = len(range(b - 1, 90 - 4 * b + 1, 8))
        expected += nx * ny
    assert desc.shape == (expected, 128) and grid.count(90, 130) == expected
    assert valid.all()
    assert np.allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-5)
    assert desc.min() >= 0
    # first descriptor of scale 3: cells centred at 2, 5, 8, 11 -> centre 2 + 1.5 * 3 = 6.5
    assert np.allclose(kp[0], [6.5, 6.5])
    assert kp[:, 0].max() < 130 and kp[:, 1].max() < 90


def test_flat_patches_are_invalid_and_zero() -> None:
    img = np.full((64, 64), 128, np.uint8)
    img[:, 48:] = 0  # one edge near the right border
    desc, kp, valid = dense_rootsift(img, GRID)
    assert not valid[kp[:, 0] < 20].any()
    assert valid.any()
    assert np.all(desc[~valid] == 0)


def test_rootsift_of_sift_is_the_square_root_of_the_l1_histogram() -> None:
    sift = np.array([[1.0, 3.0, 0.0, 4.0]], np.float32)
    assert np.allclose(rootsift_from_sift(sift), np.sqrt([[1 / 8, 3 / 8, 0.0, 4 / 8]]))


def test_grid_validation() -> None:
    with pytest.raises(ConfigError):
        DenseGrid(step=0)
    with pytest.raises(ConfigError):
        DenseGrid(bin_sizes=())
    with pytest.raises(ConfigError):
        DenseGrid(contrast_threshold=-1)
