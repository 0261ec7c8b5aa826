"""Place recognition metrics: ground-truth positives, Recall@N, precision-recall of the decision.

Protocol (stated here once, and written into every report):

- **Positives** of a query are the map places within ``radius_m`` of its position (horizontal
  distance by default, as in VPR benchmarks on UTM coordinates), or the places whose frame index
  is within ``tolerance`` frames of the query's (Gardens Point / Nordland style). Places without
  a position are never positives by radius.
- **Recall@N** is the fraction of queries *that have at least one positive* whose first N
  candidates contain a positive. Queries without any positive are left out (and counted).
  The candidate order is the localizer's (its ties are already broken deterministically), so
  Recall@N has no ties of its own.
- **Precision-recall** of the accept decision over a score ``s``: at threshold ``t`` a query is
  *predicted* a match when it was accepted and ``s >= t``; a prediction is *correct* when the
  top candidate is a positive. Queries without a positive are negatives: predicting them is a
  false positive. ``precision = correct / predicted``, ``recall = correct / queries with a
  positive``. Thresholds are the distinct scores of accepted queries: queries with equal scores
  are admitted together, never split, so a tie between a correct and a wrong query can never
  look like 100 % precision. ``s >= t`` being inclusive, a threshold is directly a minimum to
  configure (``min_score`` for the MNN score, ``min_global_similarity``, ...).
- **AUC** is the step-wise area ``sum_i (R_i - R_{i-1}) * P_i`` with ``R_0 = 0`` (average
  precision, no interpolation), so it never rewards a curve for points it did not reach.
- **Recall at 100 % precision** is the largest recall of any threshold with no false positive,
  and the threshold is the lowest such score (the most permissive safe setting); 0 and None
  when even the best-scored prediction is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selavpr_ros.errors import ConfigError

DEFAULT_NS: tuple[int, ...] = (1, 5, 10, 20)


def positives_by_radius(
    query_positions: np.ndarray,
    map_positions: np.ndarray,
    radius_m: float,
    dims: int = 2,
    chunk: int = 1024,
) -> list[np.ndarray]:
    """Ids of the map places within ``radius_m`` of each query (sorted ascending).

    ``query_positions`` is (Q, 3) and ``map_positions`` (M, 3), both with NaN rows where the
    position is unknown (such queries get no positives; such places are never positives).
    ``dims`` = 2 measures in the x-y plane, 3 in space. Distances are computed in float64
    after subtracting a common origin, so large UTM-like coordinates keep centimetre precision.
    """
    if not radius_m >= 0:
        raise ConfigError(f"radius must be >= 0 m, got {radius_m}")
    if dims not in (2, 3):
        raise ConfigError(f"distance dims must be 2 or 3, got {dims}")
    q = np.asarray(query_positions, dtype=np.float64).reshape(-1, 3)[:, :dims]
    m = np.asarray(map_positions, dtype=np.float64).reshape(-1, 3)[:, :dims]
    valid_m = np.isfinite(m).all(axis=1)
    ids_m = np.flatnonzero(valid_m)
    m = m[valid_m]
    origin = m.mean(axis=0) if len(m) else np.zeros(dims)
    m = m - origin
    out: list[np.ndarray] = []
    r2 = float(radius_m) ** 2
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk] - origin
        d2 = ((block[:, None, :] - m[None, :, :]) ** 2).sum(axis=2)
        for row, qpos in zip(d2, block, strict=True):
            if not np.isfinite(qpos).all():
                out.append(np.empty(0, dtype=np.int64))
            else:
                out.append(ids_m[row <= r2].astype(np.int64))
    return out


def positives_by_frames(
    query_frames: Sequence[int | None], map_frames: Sequence[int | None], tolerance: int
) -> list[np.ndarray]:
    """Ids of the map places whose frame index is within ``tolerance`` of each query's."""
    if tolerance < 0:
        raise ConfigError(f"frame tolerance must be >= 0, got {tolerance}")
    known = [(i, f) for i, f in enumerate(map_frames) if f is not None]
    ids = np.array([i for i, _ in known], dtype=np.int64)
    frames = np.array([f for _, f in known], dtype=np.int64)
    out = []
    for f in query_frames:
        if f is None:
            out.append(np.empty(0, dtype=np.int64))
        else:
            out.append(np.sort(ids[np.abs(frames - int(f)) <= tolerance]))
    return out


_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def frame_index_of(ref: str) -> int | None:
    """Return the frame index named by a source reference: its last integer.

    ``Image012.jpg`` -> 12, a bag message index ``"37"`` -> 37; None when it has none.
    """
    found = _LAST_INT.search(str(ref))
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class RecallAtN:
    """Recall@N over the queries that have at least one positive."""

    ns: tuple[int, ...]
    recall: tuple[float, ...]  # NaN when no query has a positive
    hits: tuple[int, ...]
    evaluated: int  # queries with at least one positive
    without_positive: int  # queries left out

    def as_dict(self) -> dict[str, Any]:
        return {
            "ns": list(self.ns),
            "recall": {str(n): _finite(r) for n, r in zip(self.ns, self.recall, strict=True)},
            "hits": {str(n): h for n, h in zip(self.ns, self.hits, strict=True)},
            "queries_evaluated": self.evaluated,
            "queries_without_positive": self.without_positive,
        }


def recall_at_n(
    ranked_ids: Sequence[Sequence[int]],
    positives: Sequence[np.ndarray],
    ns: Sequence[int] = DEFAULT_NS,
) -> RecallAtN:
    """Recall@N of ranked candidate ids (one list per query, best first)."""
    ns = tuple(int(n) for n in ns)
    if not ns or any(n < 1 for n in ns):
        raise ConfigError(f"Recall@N needs N >= 1, got {list(ns)}")
    if len(ranked_ids) != len(positives):
        raise ValueError(f"{len(ranked_ids)} rankings for {len(positives)} queries")
    first_hit: list[float] = []  # 1-based rank of the first positive, inf if none
    without = 0
    for ids, pos in zip(ranked_ids, positives, strict=True):
        if len(pos) == 0:
            without += 1
            continue
        is_pos = np.isin(np.asarray(ids, dtype=np.int64), pos)
        hit = np.flatnonzero(is_pos)
        first_hit.append(float(hit[0] + 1) if len(hit) else math.inf)
    ranks = np.asarray(first_hit)
    hits = tuple(int((ranks <= n).sum()) for n in ns)
    evaluated = len(first_hit)
    recall = tuple(h / evaluated if evaluated else math.nan for h in hits)
    return RecallAtN(ns, recall, hits, evaluated, without)


@dataclass(frozen=True)
class PRCurve:
    """Precision-recall of the accept decision over one score (see the module docstring)."""

    score: str
    thresholds: tuple[float, ...]  # distinct scores, descending
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    auc: float
    recall_at_100: float
    threshold_at_100: float | None
    positives: int  # queries with a positive (the recall denominator)
    predicted_at_accept: int  # predictions of the decision itself (every accepted query)
    precision_at_accept: float
    recall_at_accept: float
    unscored: int = 0  # accepted queries whose score is NaN (never predicted)

    def as_dict(self, with_curve: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "score": self.score,
            "auc": _finite(self.auc),
            "recall_at_100_precision": _finite(self.recall_at_100),
            "threshold_at_100_precision": self.threshold_at_100,
            "queries_with_positive": self.positives,
            "accepted": self.predicted_at_accept,
            "precision_at_accept": _finite(self.precision_at_accept),
            "recall_at_accept": _finite(self.recall_at_accept),
            "accepted_without_score": self.unscored,
        }
        if with_curve:
            out["curve"] = {
                "threshold": [_finite(t) for t in self.thresholds],
                "precision": [_finite(p) for p in self.precision],
                "recall": [_finite(r) for r in self.recall],
            }
        return out


def precision_recall(
    scores: Sequence[float],
    accepted: Sequence[bool],
    correct: Sequence[bool],
    has_positive: Sequence[bool],
    score_name: str = "score",
) -> PRCurve:
    """Compute the precision-recall curve of "accepted and score >= t" over thresholds t.

    ``correct[i]``: the top candidate of query i is one of its positives (implies
    ``has_positive[i]``).
    """
    s = np.asarray(scores, dtype=np.float64)
    acc = np.asarray(accepted, dtype=bool)
    cor = np.asarray(correct, dtype=bool)
    has = np.asarray(has_positive, dtype=bool)
    if not len(s) == len(acc) == len(cor) == len(has):
        raise ValueError("scores, accepted, correct and has_positive differ in length")
    if np.any(cor & ~has):
        raise ValueError("a query is marked correct without having a positive")
    positives = int(has.sum())
    denominator = positives if positives else math.nan
    scored = acc & ~np.isnan(s)
    thresholds = np.unique(s[scored])[::-1]  # distinct, descending
    precision, recall = [], []
    for t in thresholds:
        predicted = scored & (s >= t)
        tp = int((predicted & cor).sum())
        precision.append(tp / int(predicted.sum()))
        recall.append(tp / denominator)
    auc, prev = 0.0, 0.0
    for p, r in zip(precision, recall, strict=True):
        auc += (r - prev) * p
        prev = r
    if positives == 0:
        auc = math.nan
    safe = [i for i, p in enumerate(precision) if p == 1.0]
    if safe:
        best = safe[-1]  # precision 1 holds on a prefix; its last point has the largest recall
        recall_100, threshold_100 = recall[best], float(thresholds[best])
    else:
        recall_100, threshold_100 = (0.0 if positives else math.nan), None
    n_acc = int(acc.sum())
    tp_acc = int((acc & cor).sum())
    return PRCurve(
        score=score_name,
        thresholds=tuple(float(t) for t in thresholds),
        precision=tuple(precision),
        recall=tuple(recall),
        auc=auc,
        recall_at_100=recall_100,
        threshold_at_100=threshold_100,
        positives=positives,
        predicted_at_accept=n_acc,
        precision_at_accept=tp_acc / n_acc if n_acc else math.nan,
        recall_at_accept=tp_acc / denominator,
        unscored=int((acc & np.isnan(s)).sum()),
    )


def _finite(value: float) -> float | None:
    """JSON has no NaN: undefined values are written as null."""
    return None if value is None or not math.isfinite(value) else float(value)
