"""SelaVPR as an :class:`~selavpr_ros.extractors.base.Extractor`.

1024-d GeM global descriptors and 61x61 dense 128-d local features (for ViT-L/14 at 224x224),
re-ranked by the plain MNN count (docs/model.md).

The name carries the architecture and input size; the fingerprint is the sha256 of the weights.
A model whose adapters and heads are not trained (random initialisation or DINOv2-only weights)
gets an ``untrained-`` fingerprint prefix and a warning, so a map built with it can never pass
for a map of a trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selavpr_ros.extractors.base import (
    Extractor,
    ExtractorInfo,
    Features,
    RerankSettings,
    check_rgb_images,
)
from selavpr_ros.model import (
    InferenceRunner,
    SelaVPR,
    SelaVPRConfig,
    load_checkpoint,
    weights_fingerprint,
)

log = logging.getLogger(__name__)

UNTRAINED_PREFIX = "untrained-"


def extractor_name(config: SelaVPRConfig) -> str:
    """e.g. ``selavpr-vitl14-224x224``, ``selavpr-vits14-d2-reg4-224x224``."""
    parts = ["selavpr", config.backbone]
    if config.depth is not None and config.depth != config.spec.depth:
        parts.append(f"d{config.depth}")
    if config.registers:
        parts.append("reg4")
    h, w = config.input_hw
    parts.append(f"{h}x{w}")
    return "-".join(parts)


class SelaVPRExtractor(Extractor):
    """Wraps a :class:`SelaVPR` model and its :class:`InferenceRunner`.

    Args:
        model: the network (its ``trained`` flag decides the fingerprint prefix).
        device, precision, batch_size: passed to :class:`InferenceRunner`.
        fingerprint: precomputed weights fingerprint (hashing ViT-L takes seconds).
    """

    def __init__(
        self,
        model: SelaVPR,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 16,
        fingerprint: str | None = None,
    ) -> None:
        config = model.config
        digest = fingerprint or weights_fingerprint(model)
        trained = bool(getattr(model, "trained", False))
        if not trained:
            log.warning(
                "SelaVPR weights are not trained (%s): features are meaningless for place "
                "recognition; the fingerprint is marked %r",
                getattr(model, "weights_source", "unknown"),
                UNTRAINED_PREFIX,
            )
            if not digest.startswith(UNTRAINED_PREFIX):
                digest = UNTRAINED_PREFIX + digest
        lh, lw = config.local_hw
        self._info = ExtractorInfo(
            name=extractor_name(config),
            fingerprint=digest,
            global_dim=config.global_dim,
            local_count=lh * lw,
            local_dim=config.local_dim,
            local_grid=(lh, lw),
            # the paper's plain count over all K = 100 candidates (rerank_k None: all top_k)
            rerank=RerankSettings(match_filter="none", rerank_k=None),
        )
        self._runner = InferenceRunner(model, device, precision, batch_size)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        config: SelaVPRConfig | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        batch_size: int = 16,
    ) -> SelaVPRExtractor:
        """Load an official SelaVPR checkpoint (or a converted safetensors file)."""
        model, _ = load_checkpoint(path, config=config)
        return cls(model, device=device, precision=precision, batch_size=batch_size)

    @property
    def info(self) -> ExtractorInfo:
        return self._info

    @property
    def model(self) -> SelaVPR:
        return self._runner.model

    def extract(self, images: Sequence[np.ndarray]) -> Features:
        """(H, W, 3) uint8 RGB images -> global (B, D) and local (B, 61*61, 128) float32."""
        check_rgb_images(images)
        local, glob = self._runner.extract(list(images))
        batch = local.shape[0]
        local_np = local.reshape(batch, -1, local.shape[-1]).numpy().astype(np.float32)
        return Features(
            global_desc=np.ascontiguousarray(glob.numpy(), dtype=np.float32),
            local=np.ascontiguousarray(local_np),
        )
