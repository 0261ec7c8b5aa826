"""Evaluation of a place map against recorded queries with ground truth, without ROS.

The offline runner answers every query frame with the same :class:`Localizer` the node uses
(one image at a time, as the node does), so its matches are the node's matches for the same
frames. Results are kept per query (:class:`QueryRecord`) and scored afterwards by
:func:`score`, which also scores the node's live answers (``selavpr evaluate --live``). The
query frames come from :func:`selavpr_ros.io.sources.open_frames`, as a map build's do.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from selavpr_ros.errors import ConfigError, ImageDecodeError
from selavpr_ros.eval import latency as lat
from selavpr_ros.eval.metrics import (
    DEFAULT_NS,
    PRCurve,
    RecallAtN,
    frame_index_of,
    positives_by_frames,
    positives_by_radius,
    precision_recall,
    recall_at_n,
)
from selavpr_ros.io.frames import Frame

log = logging.getLogger(__name__)

PR_SCORES: tuple[str, ...] = ("confidence", "mnn_score", "score_fraction", "global_similarity")
# the node parameter that a threshold on each score corresponds to
PR_SCORE_PARAMETER: dict[str, str] = {
    "confidence": "(consumer side) accept results with confidence >= threshold",
    "mnn_score": "min_score",
    "score_fraction": "min_score_fraction",
    "global_similarity": "min_global_similarity",
}


@dataclass(frozen=True)
class EvalConfig:
    """How answers are scored.

    Attributes:
        ns: the N of Recall@N.
        radius_m: positives are places within this distance (default 25 m, as in VPR
            benchmarks); ignored when ``frame_tolerance`` is set.
        frame_tolerance: positives are places within this many frames (Gardens Point and
            Nordland use 2); frame indices are the last integer of a frame's reference (file
            name or bag message index).
        distance_dims: 2 = horizontal distance, 3 = distance in space.
        pr_score: the score of the headline precision-recall figures (all are reported).
    """

    ns: tuple[int, ...] = DEFAULT_NS
    radius_m: float = 25.0
    frame_tolerance: int | None = None
    distance_dims: int = 2
    pr_score: str = "confidence"

    def __post_init__(self) -> None:
        object.__setattr__(self, "ns", tuple(sorted({int(n) for n in self.ns})))
        if not self.ns or self.ns[0] < 1:
            raise ConfigError(f"Recall@N needs N >= 1, got {list(self.ns)}")
        if not self.radius_m > 0:
            raise ConfigError(f"radius must be > 0 m, got {self.radius_m}")
        if self.frame_tolerance is not None and self.frame_tolerance < 0:
            raise ConfigError(f"frame tolerance must be >= 0, got {self.frame_tolerance}")
        if self.distance_dims not in (2, 3):
            raise ConfigError(f"distance dims must be 2 or 3, got {self.distance_dims}")
        if self.pr_score not in PR_SCORES:
            raise ConfigError(f"pr score must be one of {PR_SCORES}, got '{self.pr_score}'")

    def positives_protocol(self) -> dict[str, Any]:
        if self.frame_tolerance is not None:
            return {"by": "frame_tolerance", "frames": self.frame_tolerance,
                    "frame_index": "last integer in the file name / bag message index"}
        return {"by": "radius", "radius_m": self.radius_m,
                "distance": "horizontal (x, y)" if self.distance_dims == 2 else "3-D"}


@dataclass(frozen=True)
class QueryRecord:
    """One query frame and the answer it got (offline or from the node).

    ``ids`` are the candidates in final order, ``global_ids`` the same places in global-search
    order (before re-ranking). Scores are NaN where unknown (e.g. no re-ranking, or live
    results, which do not carry the score fraction). ``timings_ms`` has decode and the
    localizer's stages; ``latency_ms`` is end to end (offline: decode + query; live: publish
    of the frame to receipt of its result).
    """

    index: int
    stamp_ns: int
    source_ref: str
    frame_index: int | None
    position: tuple[float, float, float] | None
    image_hw: tuple[int, int] | None = None
    ids: tuple[int, ...] = ()
    global_ids: tuple[int, ...] = ()
    accepted: bool = False
    confidence: float = 0.0
    mnn_score: float = math.nan
    score_fraction: float = math.nan
    global_similarity: float = math.nan
    reject_reason: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    latency_ms: float = math.nan
    error: str = ""
    orientation: tuple[float, float, float, float] | None = None  # ground truth, if known
    pose_source: str = "none"  # how the query pose was obtained (see PlaceRecognition)
    pose_position: tuple[float, float, float] | None = None
    pose_orientation: tuple[float, float, float, float] | None = None
    keyframe_position: tuple[float, float, float] | None = None  # the matched place's pose
    keyframe_orientation: tuple[float, float, float, float] | None = None

    @property
    def answered(self) -> bool:
        return not self.error

    def score(self, name: str) -> float:
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("mnn_score", "score_fraction", "global_similarity", "latency_ms"):
            if not math.isfinite(out[key]):
                out[key] = None
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> QueryRecord:
        data = dict(data)
        for key in ("mnn_score", "score_fraction", "global_similarity", "latency_ms"):
            if data.get(key) is None:
                data[key] = math.nan
        for key in ("ids", "global_ids"):
            data[key] = tuple(data.get(key, ()))
        for key in ("position", "image_hw", "orientation", "pose_position", "pose_orientation",
                    "keyframe_position", "keyframe_orientation"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return QueryRecord(**data)


def record_from_result(frame: Frame, index: int, result: Any, image_hw: tuple[int, int] | None,
                       timings_ms: dict[str, float], latency_ms: float) -> QueryRecord:
    """Make a :class:`QueryRecord` from a core ``LocalizationResult``."""
    cands = result.candidates
    top = cands[0] if cands else None
    pose, matched = result.pose, result.matched
    return QueryRecord(
        orientation=frame.pose.orientation if frame.pose is not None else None,
        pose_source=pose.source if pose is not None else "none",
        pose_position=pose.position if pose is not None else None,
        pose_orientation=pose.orientation if pose is not None else None,
        keyframe_position=matched.position if matched is not None else None,
        keyframe_orientation=matched.orientation if matched is not None else None,
        index=index, stamp_ns=frame.stamp_ns, source_ref=frame.source_ref,
        frame_index=frame_index_of(frame.source_ref),
        position=frame.pose.position if frame.pose is not None else None,
        image_hw=image_hw,
        ids=tuple(int(c.place_id) for c in cands),
        global_ids=tuple(int(c.place_id) for c in sorted(cands, key=lambda c: c.global_rank)),
        accepted=bool(result.accepted), confidence=float(result.confidence),
        mnn_score=float(top.rerank_score) if top is not None else math.nan,
        score_fraction=float(result.score_fraction)
        if top is not None and not math.isnan(top.rerank_score) else math.nan,
        global_similarity=float(top.global_similarity) if top is not None else math.nan,
        reject_reason=result.reject_reason, timings_ms=dict(timings_ms), latency_ms=latency_ms,
    )


def failed_record(frame: Frame, index: int, error: str) -> QueryRecord:
    return QueryRecord(
        index=index, stamp_ns=frame.stamp_ns, source_ref=frame.source_ref,
        frame_index=frame_index_of(frame.source_ref),
        position=frame.pose.position if frame.pose is not None else None, error=error)


@dataclass
class OfflineRun:
    records: list[QueryRecord]
    wall_s: float


def run_offline(localizer: Any, frames: Iterable[Frame], *, total: int | None = None,
                progress: bool = True, only_stamps: set[int] | None = None,
                camera: Any = None) -> OfflineRun:
    """Answer every frame (or those stamped in ``only_stamps``) with ``localizer``.

    ``camera``: the query camera's model (for metric query poses).
    """
    from tqdm import tqdm

    records: list[QueryRecord] = []
    bar = tqdm(total=total, unit="query", desc="evaluate", disable=not progress)
    start = time.perf_counter()
    try:
        for index, frame in enumerate(frames):
            bar.update(1)
            if only_stamps is not None and frame.stamp_ns not in only_stamps:
                continue
            t0 = time.perf_counter()
            try:
                rgb = frame.load()
            except ImageDecodeError as err:
                records.append(failed_record(frame, index, f"undecodable: {err}"))
                continue
            t1 = time.perf_counter()
            result = localizer.query(rgb, camera=camera)
            t2 = time.perf_counter()
            timings = {"decode": (t1 - t0) * 1e3, **result.timings_ms}
            records.append(record_from_result(frame, index, result, rgb.shape[:2], timings,
                                              (t2 - t0) * 1e3))
    finally:
        bar.close()
    return OfflineRun(records, time.perf_counter() - start)


# --- scoring --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scores:
    """Everything computed from a set of answered queries."""

    recall_before: RecallAtN
    recall_after: RecallAtN
    pr: dict[str, PRCurve]
    outcomes: dict[int, str]  # record index -> correct / wrong / rejected / no_ground_truth
    positives: dict[int, tuple[int, ...]]
    counts: dict[str, int]


def map_ground_truth(place_map: Any) -> tuple[np.ndarray, list[int | None]]:
    """(M, 3) place positions (NaN rows where unknown) and frame indices of a map."""
    places = place_map.places(range(len(place_map))) if len(place_map) else []
    positions = np.full((len(places), 3), np.nan)
    frames: list[int | None] = []
    for i, p in enumerate(places):
        if p.position is not None:
            positions[i] = p.position
        frames.append(frame_index_of(p.source_ref))
    return positions, frames


def score(records: Sequence[QueryRecord], map_positions: np.ndarray,
          map_frames: Sequence[int | None], config: EvalConfig) -> Scores:
    """Recall@N before/after re-ranking and precision-recall of ``records``.

    Failed records are left out. Records without ground truth (no pose, or no frame number
    under the frame protocol) are left out and counted.
    """
    answered = [r for r in records if r.answered]
    if config.frame_tolerance is not None:
        usable = [r for r in answered if r.frame_index is not None]
        positives = positives_by_frames([r.frame_index for r in usable], map_frames,
                                        config.frame_tolerance)
    else:
        usable = [r for r in answered if r.position is not None]
        qpos = np.array([r.position for r in usable], dtype=np.float64).reshape(-1, 3)
        positives = positives_by_radius(qpos, map_positions, config.radius_m,
                                        config.distance_dims)
    before = recall_at_n([r.global_ids for r in usable], positives, config.ns)
    after = recall_at_n([r.ids for r in usable], positives, config.ns)
    has = [len(p) > 0 for p in positives]
    correct = [bool(r.ids) and bool(np.isin(r.ids[0], p))
               for r, p in zip(usable, positives, strict=True)]
    accepted = [r.accepted for r in usable]
    curves = {}
    for name in PR_SCORES:
        values = [r.score(name) for r in usable]
        if name != "confidence" and all(math.isnan(v) for v in values):
            continue  # this score is not known for these answers
        curves[name] = precision_recall(values, accepted, correct, has, name)
    outcomes: dict[int, str] = {}
    for r in answered:
        outcomes[r.index] = "no_ground_truth"
    for r, ok in zip(usable, correct, strict=True):
        outcomes[r.index] = ("correct" if ok else "wrong") if r.accepted else "rejected"
    counts = {
        "queries": len(records),
        "unanswered": len(records) - len(answered),
        "without_ground_truth": len(answered) - len(usable),
        "evaluated": len(usable),
        "with_positive": int(sum(has)),
        "without_positive": len(usable) - int(sum(has)),
        "accepted": int(sum(accepted)),
        "accepted_correct": int(sum(a and c for a, c in zip(accepted, correct, strict=True))),
        "accepted_wrong": int(sum(a and not c for a, c in zip(accepted, correct, strict=True))),
        "rejected": len(usable) - int(sum(accepted)),
        "top1_correct": int(sum(correct)),
    }
    return Scores(before, after, curves, outcomes,
                  {r.index: tuple(int(i) for i in p)
                   for r, p in zip(usable, positives, strict=True)},
                  counts)


def latency_summary(records: Sequence[QueryRecord], wall_s: float) -> dict[str, Any]:
    """Per-stage and end-to-end percentiles, throughput, peak memory."""
    answered = [r for r in records if r.answered]
    return {
        "stages_ms": lat.summarize_stages([r.timings_ms for r in answered]),
        "end_to_end_ms": lat.summarize([r.latency_ms for r in answered]),
        "wall_s": wall_s,
        "throughput_hz": lat.throughput_hz(len(answered), wall_s),
        "peak_rss_mb": lat.peak_rss_mb(),
        "peak_cuda_mb": lat.peak_cuda_mb(),
        "percentile_method": "numpy linear interpolation",
    }
