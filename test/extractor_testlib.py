"""An extractor that is only an identity, for tests that hand features to maps and localizers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selavpr_ros.extractors.base import Extractor, ExtractorInfo, Features


class FeatureOnlyExtractor(Extractor):
    """Identity only: the test passes precomputed features, so ``extract`` is never called."""

    def __init__(self, info: ExtractorInfo) -> None:
        self._info = info

    @property
    def info(self) -> ExtractorInfo:
        return self._info

    def extract(self, images: Sequence[np.ndarray]) -> Features:
        raise NotImplementedError("this test extractor takes features, not images")


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (as descriptors are stored)."""
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
