"""Loop-closure settings: keyframes, exclusion window, acceptance and temporal consistency.

Field metadata (:func:`selavpr_ros.localizer.config.setting`) is what the node's parameters
and ``config/loop_closure.yaml`` are derived from, as for the localizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selavpr_ros.errors import ConfigError
from selavpr_ros.localizer.config import LocalizerConfig, check_ranges, setting
from selavpr_ros.mapping.keyframes import KeyframeConfig


@dataclass(frozen=True)
class LoopConfig:
    """When a keyframe of the run closes a loop with an earlier one.

    A false loop can wreck a SLAM map, so the defaults are strict: a keyframe is accepted
    only when its best match passes the localizer's rules (MNN score, score fraction, margin)
    AND at least ``consistency_k`` of the last ``consistency_n`` keyframes (this one included)
    passed them with matches that align the two passes of the route alike: the offset between
    matched place and query along the trajectory (their sum for a loop driven the other way)
    agrees within ``consistency_slack_m``. The loop then names the place at the alignment (within
    the slack of their median offset) that those keyframes' MNN scores support most, not the
    single keyframe's best, which jitters along alike-looking stretches. Candidates younger
    than ``min_age_s`` or closer than ``min_path_m`` along the trajectory are never considered.
    """

    keyframe_distance_m: float = field(default=0.5, metadata=setting(
        "keyframe: metres moved since the last keyframe (0: every frame)", 0.0, 1e6))
    keyframe_rotation_deg: float = field(default=15.0, metadata=setting(
        "keyframe: degrees turned since the last keyframe (0: every frame)", 0.0, 360.0))
    min_age_s: float = field(default=30.0, metadata=setting(
        "exclusion: candidates younger than this (s) are not loops", 0.0, 1e9))
    min_path_m: float = field(default=20.0, metadata=setting(
        "exclusion: candidates closer than this along the trajectory (m) are not loops",
        0.0, 1e9))
    top_k: int = field(default=20, metadata=setting(
        "keyframes retrieved by global descriptor", 1, 10000))
    rerank_k: int = field(default=10, metadata=setting(
        "how many of them are re-ranked by MNN", 1, 10000))
    min_score: int = field(default=15, metadata=setting(
        "acceptance: minimum MNN count of the best candidate", 0, 10**7))
    min_score_fraction: float = field(default=0.1, metadata=setting(
        "acceptance: minimum MNN count / query features", 0.0, 1.0))
    min_margin: float = field(default=1.2, metadata=setting(
        "acceptance: best vs best distinct candidate (ratio)", 0.0, 1e9))
    margin_distance_m: float = field(default=25.0, metadata=setting(
        "a distinct candidate is at least this far (m)", 0.0, 1e9))
    min_global_similarity: float = field(default=-1.0, metadata=setting(
        "acceptance: minimum global cosine similarity", -1.0, 1.0))
    min_inliers: int = field(default=0, metadata=setting(
        "geometric check with camera info: minimum essential-matrix inliers of the MNN pairs "
        "(0: off)", 0, 10**6))
    consistency_k: int = field(default=3, metadata=setting(
        "temporal consistency: matches needed among the last consistency_n keyframes", 1, 1000))
    consistency_n: int = field(default=5, metadata=setting(
        "temporal consistency: keyframes looked at (this one included)", 1, 1000))
    consistency_slack_m: float = field(default=5.0, metadata=setting(
        "temporal consistency: allowed disagreement (m) of the pass-to-pass offsets of "
        "recent matches",
        0.0, 1e6))

    def __post_init__(self) -> None:
        if self.consistency_k > self.consistency_n:
            raise ConfigError(f"consistency_k ({self.consistency_k}) must be <= consistency_n "
                              f"({self.consistency_n})")
        if self.rerank_k > self.top_k:
            raise ConfigError(f"rerank_k ({self.rerank_k}) must be <= top_k ({self.top_k})")
        check_ranges(self)
        self.localizer_config()  # its own checks

    @property
    def keyframes(self) -> KeyframeConfig:
        return KeyframeConfig(min_distance=self.keyframe_distance_m,
                              min_rotation_deg=self.keyframe_rotation_deg, min_interval=None)

    def localizer_config(self) -> LocalizerConfig:
        """Return the localizer's acceptance rules with these thresholds (one decision)."""
        return LocalizerConfig(
            top_k=self.top_k, rerank_k=self.rerank_k, min_score=self.min_score,
            min_score_fraction=self.min_score_fraction, min_margin=self.min_margin,
            margin_mode="ratio", margin_distance_m=self.margin_distance_m,
            margin_id_distance=10, min_global_similarity=self.min_global_similarity)

