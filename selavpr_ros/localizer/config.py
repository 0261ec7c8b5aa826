"""Localizer settings: retrieval depth, re-ranking, and the acceptance rules."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from selavpr_ros.errors import ConfigError


@dataclass(frozen=True)
class LocalizerConfig:
    """How a query is answered and when its best match is accepted.

    Retrieval and re-ranking:
        top_k: places retrieved by global descriptor (the paper's K = 100).
        rerank_k: how many of them are re-ranked by MNN count; None = all ``top_k``, 0 = none
            (the order and the decision then use the global similarity alone).
        device, precision: where MNN scores are computed ("cpu", "cuda", "cuda:1"; "fp16" is
            CUDA only).
        rerank_memory_mb: working-memory budget of the MNN re-ranker (sets its chunk size); on
            CUDA at least this, more when a quarter of the free device memory is larger (fewer,
            larger chunks; at most 4 GiB).
        gpu_cache_mb: on CUDA, keep the map's local features on the device when they take at
            most this many MiB (and at most half the free device memory), so re-ranking
            gathers candidates there instead of copying them from the map per query; 0 = off.

    Acceptance (all must hold; 0 / 1.0 / -1.0 switch a rule off):
        min_score: minimum MNN count of the best candidate.
        min_score_fraction: minimum MNN count as a fraction of the query's valid local features.
        min_margin: minimum margin between the best candidate and the best "distinct" candidate,
            one at least ``margin_distance_m`` away from it (or ``margin_id_distance`` ids away
            when either has no position). ``margin_mode`` "ratio": best / distinct (1.0 = off);
            "difference": best - distinct (0 = off). No distinct candidate = unlimited margin.
        min_global_similarity: minimum global (cosine) similarity of the best candidate.

    Confidence:
        confidence_full_fraction: score fraction at which the evidence term of the confidence
            saturates at 1 (see :func:`selavpr_ros.localizer.decision.confidence`).
    """

    top_k: int = 100
    rerank_k: int | None = None
    device: str = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    rerank_memory_mb: float = 256.0
    gpu_cache_mb: float = 4096.0
    min_score: int = 0
    min_score_fraction: float = 0.0
    min_margin: float = 1.1
    margin_mode: Literal["ratio", "difference"] = "ratio"
    margin_distance_m: float = 25.0
    margin_id_distance: int = 10
    min_global_similarity: float = -1.0
    confidence_full_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.rerank_k is not None and not 0 <= self.rerank_k <= self.top_k:
            raise ConfigError(f"rerank_k must be in [0, top_k={self.top_k}], got {self.rerank_k}")
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ConfigError("precision 'fp16' needs a CUDA device")
        if not self.rerank_memory_mb > 0:
            raise ConfigError(f"rerank_memory_mb must be > 0, got {self.rerank_memory_mb}")
        if not self.gpu_cache_mb >= 0:
            raise ConfigError(f"gpu_cache_mb must be >= 0, got {self.gpu_cache_mb}")
        if self.min_score < 0:
            raise ConfigError(f"min_score must be >= 0, got {self.min_score}")
        if not 0.0 <= self.min_score_fraction <= 1.0:
            raise ConfigError(
                f"min_score_fraction must be in [0, 1], got {self.min_score_fraction}"
            )
        if self.margin_mode not in ("ratio", "difference"):
            raise ConfigError(f"margin_mode must be 'ratio' or 'difference', got "
                              f"{self.margin_mode!r}")
        if math.isnan(self.min_margin) or self.min_margin < 0:
            raise ConfigError(f"min_margin must be >= 0, got {self.min_margin}")
        if self.margin_distance_m < 0 or self.margin_id_distance < 1:
            raise ConfigError(
                f"margin_distance_m must be >= 0 and margin_id_distance >= 1, got "
                f"{self.margin_distance_m} and {self.margin_id_distance}"
            )
        if not -1.0 <= self.min_global_similarity <= 1.0:
            raise ConfigError(
                f"min_global_similarity must be in [-1, 1], got {self.min_global_similarity}"
            )
        if not 0.0 < self.confidence_full_fraction <= 1.0:
            raise ConfigError(
                f"confidence_full_fraction must be in (0, 1], got {self.confidence_full_fraction}"
            )
        if self.effective_rerank_k == 0 and (self.min_score or self.min_score_fraction):
            raise ConfigError("min_score and min_score_fraction need re-ranking (rerank_k > 0)")

    @property
    def effective_rerank_k(self) -> int:
        return self.top_k if self.rerank_k is None else self.rerank_k
