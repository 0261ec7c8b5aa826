"""Preprocessing semantics, checked against values derived by hand.

Reference: ToTensor, ImageNet Normalize, then tensor bilinear resize to 224x224 with
align_corners=False and *no* antialias (torchvision 0.15).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavpr_ros.errors import ImageDecodeError
from selavpr_ros.model import preprocess

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def test_constant_image_is_normalised_per_channel() -> None:
    image = np.empty((100, 150, 3), np.uint8)
    image[...] = (10, 128, 250)
    x = preprocess(image)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    expected = (np.array([10, 128, 250]) / 255.0 - MEAN) / STD
    for c in range(3):
        assert torch.allclose(x[0, c], torch.full((224, 224), float(expected[c])), atol=1e-5)


def test_downscale_by_two_averages_pixel_pairs_without_antialias() -> None:
    """Bilinear, align_corners=False, factor 2: out[i] = (in[2i] + in[2i+1]) / 2 exactly.

    An antialiased resize would widen the filter to four taps and mix in 2i-1 and 2i+2.
    """
    rng = np.random.default_rng(0)
    row = rng.integers(0, 256, size=448).astype(np.uint8)
    image = np.repeat(np.repeat(row[None, :, None], 448, axis=0), 3, axis=2)  # varies along x
    x = preprocess(image)[0, 0, 0].double().numpy()
    norm = (row / 255.0 - MEAN[0]) / STD[0]
    expected = (norm[0::2] + norm[1::2]) / 2
    assert np.allclose(x, expected, atol=1e-5)


def test_upscale_two_pixels_to_four() -> None:
    """Source positions (i+0.5)/2-0.5 = -0.25, 0.25, 0.75, 1.25 -> a, .75a+.25b, .25a+.75b, b."""
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 0] = 0
    image[:, 1] = 200
    x = preprocess(image, size=(2, 4))[0, 1, 0].double().numpy()
    a, b = (0 - MEAN[1]) / STD[1], (200 / 255 - MEAN[1]) / STD[1]
    assert np.allclose(x, [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b], atol=1e-5)


def test_same_size_is_only_normalised() -> None:
    image = np.random.default_rng(1).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    x = preprocess(image)[0].permute(1, 2, 0).double().numpy()
    assert np.allclose(x, (image / 255.0 - MEAN) / STD, atol=1e-5)


def test_batches_lists_and_tensors_agree() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    c = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    stacked = preprocess(np.stack([a, b]))
    listed = preprocess([a, torch.from_numpy(b), c])
    assert stacked.shape == (2, 3, 224, 224) and listed.shape == (3, 3, 224, 224)
    assert torch.equal(stacked, listed[:2])
    assert torch.equal(listed[2], preprocess(c)[0])
    assert preprocess(a, size=(182, 266)).shape == (1, 3, 182, 266)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((10, 10, 3), np.float32), "expected uint8 RGB"),
        (np.zeros((10, 10), np.uint8), r"got shape \(10, 10\)"),
        (np.zeros((10, 10, 4), np.uint8), "expected uint8 RGB"),
        ([], "no images"),
        ("image.png", "expected an array"),
    ],
)
def test_rejects_non_rgb_uint8(bad, match: str) -> None:
    with pytest.raises(ImageDecodeError, match=match):
        preprocess(bad)
