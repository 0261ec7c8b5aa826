"""Extractor interface (Features, ExtractorInfo, RerankSettings) and the SelaVPR extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selavpr_ros.errors import ConfigError
from selavpr_ros.extractors.base import ExtractorInfo, Features, RerankSettings, check_rgb_images
from selavpr_ros.extractors.selavpr import SelaVPRExtractor, extractor_name
from selavpr_ros.model import SelaVPR, SelaVPRConfig, preprocess, weights_fingerprint


def test_features_validate_shapes_and_dtypes() -> None:
    g = np.zeros((2, 8), np.float32)
    loc = np.zeros((2, 5, 4), np.float32)
    Features(g, loc, np.ones((2, 5), bool), np.zeros((2, 5, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        Features(g.astype(np.float64), loc)
    with pytest.raises(ValueError, match="B=2"):
        Features(g, loc[:1])
    with pytest.raises(ValueError, match="float16 or float32"):
        Features(g, loc.astype(np.int8))
    with pytest.raises(ValueError, match="local_mask"):
        Features(g, loc, np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="keypoints"):
        Features(g, loc, None, np.zeros((2, 5, 3), np.float32))
    one = Features(g, loc).select(1)
    assert len(one) == 1 and one.local.shape == (1, 5, 4)


def test_extractor_info_round_trip_and_checks() -> None:
    info = ExtractorInfo("x", "fp", 8, 9, 4, local_grid=(3, 3), variable_local_count=True,
                         rerank=RerankSettings("ratio", ratio=0.7))
    assert ExtractorInfo.from_dict(info.to_dict()) == info
    with pytest.raises(ConfigError, match="does not hold"):
        ExtractorInfo("x", "fp", 8, 10, 4, local_grid=(3, 3))
    with pytest.raises(ConfigError, match="non-empty"):
        ExtractorInfo("x", "", 8, 9, 4)
    with pytest.raises(ConfigError, match="match_filter"):
        RerankSettings("mutual-ish")
    with pytest.raises(ConfigError, match="ratio"):
        RerankSettings("ratio", ratio=1.5)
    with pytest.raises(ConfigError, match="unknown"):
        RerankSettings.from_dict({"match_filter": "none", "threshold": 1})


def test_check_rgb_images() -> None:
    check_rgb_images([np.zeros((4, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        check_rgb_images([])
    with pytest.raises(ValueError, match="RGB"):
        check_rgb_images([np.zeros((4, 5), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        check_rgb_images([np.zeros((4, 5, 3), np.float32)])


@pytest.fixture(scope="module")
def small_model() -> SelaVPR:
    torch.manual_seed(0)
    return SelaVPR(SelaVPRConfig(backbone="vits14", depth=2)).eval()


def test_selavpr_extractor_outputs(small_model: SelaVPR) -> None:
    extractor = SelaVPRExtractor(small_model)
    info = extractor.info
    assert info.name == "selavpr-vits14-d2-224x224"
    assert (info.global_dim, info.local_count, info.local_dim) == (384, 61 * 61, 128)
    assert info.local_grid == (61, 61) and info.rerank.match_filter == "none"
    assert extractor.local_shape == (61, 61, 128)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    feats = extractor.extract(images)
    feats.check_against(info)
    assert feats.global_desc.dtype == np.float32 and feats.local.dtype == np.float32
    assert np.allclose(np.linalg.norm(feats.global_desc, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(feats.local, axis=2), 1.0, atol=1e-5)
    with torch.inference_mode():  # the model called directly, grid flattened row-major
        local, glob = small_model(preprocess(images))
    assert np.allclose(feats.global_desc, glob.numpy(), atol=1e-6)
    assert np.allclose(feats.local, local.reshape(2, -1, 128).numpy(), atol=1e-6)
    assert np.allclose(feats.local[0, 61 * 7 + 5], local[0, 7, 5].numpy(), atol=1e-6)


def test_untrained_weights_are_marked_and_distinguished(small_model: SelaVPR) -> None:
    assert not small_model.trained
    extractor = SelaVPRExtractor(small_model)
    assert extractor.fingerprint == "untrained-" + weights_fingerprint(small_model)
    other = SelaVPR(SelaVPRConfig(backbone="vits14", depth=2)).eval()
    assert SelaVPRExtractor(other).fingerprint != extractor.fingerprint
    small_model.trained = True  # as load_checkpoint sets it for a trained SelaVPR file
    try:
        assert SelaVPRExtractor(small_model).fingerprint == weights_fingerprint(small_model)
    finally:
        small_model.trained = False


def test_extractor_name_reflects_config() -> None:
    assert extractor_name(SelaVPRConfig()) == "selavpr-vitl14-224x224"
    assert extractor_name(SelaVPRConfig(backbone="vitb14", registers=True,
                                        image_size=(280, 420))) == "selavpr-vitb14-reg4-280x420"
