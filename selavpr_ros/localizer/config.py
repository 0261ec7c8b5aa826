"""Localizer settings: retrieval depth, re-ranking, and the acceptance rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypeVar

from selavpr_ros.errors import ConfigError

C = TypeVar("C")


def setting(description: str, low: float | None = None, high: float | None = None, *,
            none: Any = None, node: bool = True, live: bool = True) -> dict[str, Any]:
    """Field metadata from which node parameters, CLI flags and the YAML are derived.

    ``none``: the value that stands for None where a parameter cannot be None (rerank_k -1);
    ``node``: False where the node takes the value from another parameter (device, precision);
    ``live``: False where a change needs a reconfigure (memory budgets set at start).
    """
    return {"description": description, "low": low, "high": high, "none": none,
            "node": node, "live": live}


@dataclass(frozen=True)
class LocalizerConfig:
    """How a query is answered and when its best match is accepted.

    Retrieval and re-ranking:
        top_k: places retrieved by global descriptor (the paper's K = 100).
        rerank_k: how many of them are re-ranked by MNN count; 0 = none (the order and the
            decision then use the global similarity alone); None = the map's default (its
            extractor's ``RerankSettings.rerank_k``: e.g. 50 for the classical extractor, all
            ``top_k`` for SelaVPR and for maps that predate the recorded default). Always at
            most ``top_k``: see :meth:`rerank_depth`.
        device, precision: where and how MNN scores are computed ("cpu", "cuda", "cuda:1";
            "fp32" exact; "fp16" CUDA only; "bf16" on CUDA or a CPU with bf16 instructions).
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

    Query pose (accepted frames only, :mod:`selavpr_ros.localizer.pose`):
        pose_places: best re-ranked places given to the pose estimator (PnP uses those with
            depth, two-view needs >= 2); 0 = the keyframe pose only.
        pose_refine: sub-grid query pixels for two-view, classical extractor (needs the image;
            off by default: on the benchmark street it costs a fine-grid RootSIFT of the query
            per frame for no measurable gain, bench/PERFORMANCE.md).
        camera_info_file: ROS camera-calibration YAML of the query camera; the node uses
            CameraInfo instead when it has one.
    """

    top_k: int = field(default=100, metadata=setting(
        "places retrieved by global descriptor", 1, 10000))
    rerank_k: int | None = field(default=None, metadata=setting(
        "how many of top_k are re-ranked by MNN (-1: the map's default, 0: none)", -1, 10000,
        none=-1))
    device: str = field(default="cpu", metadata=setting(
        "cpu, cuda or cuda:N (extraction and re-ranking)", node=False))
    precision: Literal["fp32", "fp16", "bf16"] = field(default="fp32", metadata=setting(
        "fp32, fp16 on CUDA, or bf16 (CPU or CUDA)", node=False))
    rerank_memory_mb: float = field(default=256.0, metadata=setting(
        "working memory of the MNN re-ranker (MiB)", 1.0, 1e6, live=False))
    gpu_cache_mb: float = field(default=4096.0, metadata=setting(
        "on CUDA, keep the map's local features on the GPU when they fit this budget "
        "(MiB; 0: off)", 0.0, 1e7, live=False))
    min_score: int = field(default=0, metadata=setting(
        "acceptance: minimum MNN count of the best candidate", 0, 10**7))
    min_score_fraction: float = field(default=0.0, metadata=setting(
        "acceptance: minimum MNN count / query features", 0.0, 1.0))
    min_margin: float = field(default=1.1, metadata=setting(
        "acceptance: best vs best distinct candidate (ratio; see margin_mode)", 0.0, 1e9))
    margin_mode: Literal["ratio", "difference"] = field(default="ratio", metadata=setting(
        "margin as 'ratio' or 'difference'"))
    margin_distance_m: float = field(default=25.0, metadata=setting(
        "a distinct candidate is at least this far (m)", 0.0, 1e9))
    margin_id_distance: int = field(default=10, metadata=setting(
        "... or this many ids away when poses are missing", 1, 10**9))
    min_global_similarity: float = field(default=-1.0, metadata=setting(
        "acceptance: minimum global cosine similarity", -1.0, 1.0))
    confidence_full_fraction: float = field(default=0.25, metadata=setting(
        "score fraction at which confidence saturates", 1e-6, 1.0))
    pose_places: int = field(default=5, metadata=setting(
        "query pose: best places given to PnP / two-view (0: keyframe pose only)", 0, 100))
    pose_refine: bool = field(default=False, metadata=setting(
        "query pose: sub-grid query pixels for two-view (classical extractor)"))
    camera_info_file: str = field(default="", metadata=setting(
        "query camera calibration YAML (the node prefers CameraInfo)", live=False))

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.rerank_k is not None and not 0 <= self.rerank_k <= self.top_k:
            raise ConfigError(f"rerank_k must be in [0, top_k={self.top_k}], got {self.rerank_k}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"precision must be 'fp32', 'fp16' or 'bf16', got "
                              f"{self.precision!r}")
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
        if self.rerank_k == 0:
            self.check_rerank_depth(0)

    def rerank_depth(self, map_default: int | None) -> int:
        """Return how many candidates are re-ranked.

        ``rerank_k``, else the map's default, else all ``top_k``; never more than ``top_k``.
        """
        k = self.rerank_k if self.rerank_k is not None else map_default
        return self.top_k if k is None else min(int(k), self.top_k)

    def check_rerank_depth(self, depth: int) -> None:
        """Raise ConfigError when the acceptance rules need MNN scores but ``depth`` is 0."""
        if depth == 0 and (self.min_score or self.min_score_fraction):
            raise ConfigError("min_score and min_score_fraction need re-ranking (rerank_k > 0)")


@dataclass(frozen=True)
class Setting:
    """One LocalizerConfig field as a parameter/flag: name, default (not None), range, help."""

    name: str
    default: Any
    description: str
    low: float | None
    high: float | None
    none: Any
    live: bool


def settings(node_only: bool = False, config_class: type = LocalizerConfig) -> list[Setting]:
    """Return a config dataclass's fields (LocalizerConfig's by default) with their metadata."""
    out = []
    for f in fields(config_class):
        meta = f.metadata
        if node_only and not meta["node"]:
            continue
        default = meta["none"] if f.default is None else f.default
        out.append(Setting(f.name, default, meta["description"], meta["low"], meta["high"],
                           meta["none"], meta["live"]))
    return out


def from_values(config_class: type[C], values: dict[str, Any], **extra: Any) -> C:
    """Return a config dataclass from parameter/flag values by field name.

    A field's ``none`` stand-in (rerank_k -1) becomes None and ints become floats where the
    field is a float, as ROS parameters and YAML give them.
    """
    kwargs: dict[str, Any] = {}
    for s in settings(config_class=config_class):
        if s.name not in values:
            continue
        value = values[s.name]
        if s.none is not None and value == s.none:
            value = None
        elif isinstance(s.default, float) and not isinstance(value, bool):
            value = float(value)
        kwargs[s.name] = value
    kwargs.update(extra)
    return config_class(**kwargs)


def config_from_values(values: dict[str, Any], **extra: Any) -> LocalizerConfig:
    """Return a LocalizerConfig from values by field name (see :func:`from_values`)."""
    return from_values(LocalizerConfig, values, **extra)


def check_ranges(config: Any) -> None:
    """Raise ConfigError for a numeric field outside its setting's [low, high] (NaN too)."""
    for f in fields(config):
        low, high = f.metadata.get("low"), f.metadata.get("high")
        value = getattr(config, f.name)
        if value is None or isinstance(value, (str, bool)) or (low is None and high is None):
            continue
        if (low is not None and not value >= low) or (high is not None and not value <= high):
            raise ConfigError(f"{f.name} must be in [{low}, {high}], got {value}")


def config_values(config: LocalizerConfig, node_only: bool = True) -> dict[str, Any]:
    """Return ``config`` as parameter/flag values by field name (None -> its stand-in)."""
    values = {}
    for s in settings(node_only):
        value = getattr(config, s.name)
        values[s.name] = s.none if value is None else value
    return values
