"""The accept/reject decision and the confidence of the best candidate.

Inputs are the candidates in final order with their scores (MNN counts, or global similarities
when re-ranking is off) and positions. The "distinct" candidate is the best one at least
``margin_distance_m`` from the best (by id distance when a position is missing): a second
candidate next to the best is the same place seen again, not a competing hypothesis.

The localizer runs this for every query over all its candidates, so the search is one numpy
pass (positions as an (n, 3) array, NaN = missing) rather than a Python loop per candidate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from selavpr_ros.localizer.config import LocalizerConfig

# (n, 3) float array with NaN rows for missing positions, or one tuple / None per candidate
Positions = np.ndarray | Sequence[tuple[float, float, float] | None]


@dataclass(frozen=True)
class Decision:
    accepted: bool
    confidence: float
    reject_reason: str
    score_fraction: float  # best score / query feature count (global similarity without rerank)
    margin: float  # by config.margin_mode; inf when no distinct candidate exists
    distinct_index: int | None  # position of the distinct candidate in the final order


def distinct_candidate(
    ids: Sequence[int] | np.ndarray,
    positions: Positions,
    config: LocalizerConfig,
) -> int | None:
    """Index of the first candidate after the best that is far enough from it."""
    if len(ids) == 0:
        return None
    pos = _position_array(positions)
    ids = np.asarray(ids, dtype=np.int64)
    limit = config.margin_distance_m
    known = ~np.isnan(pos).any(axis=1)
    diff = pos[1:] - pos[0]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    # numpy's rounding may differ from math.dist's by an ulp: the few at the limit use math.dist
    for i in np.flatnonzero(np.abs(dist - limit) <= 1e-12 * limit).tolist():
        dist[i] = math.dist(pos[0].tolist(), pos[i + 1].tolist())
    far = np.where(known[1:] & known[0], dist >= limit,
                   np.abs(ids[1:] - ids[0]) >= config.margin_id_distance)
    hits = np.flatnonzero(far)
    return int(hits[0]) + 1 if hits.size else None


def _position_array(positions: Positions) -> np.ndarray:
    if isinstance(positions, np.ndarray):
        return positions.astype(np.float64, copy=False).reshape(-1, 3)
    nan = (math.nan,) * 3
    return np.array([nan if p is None else p for p in positions], np.float64).reshape(-1, 3)


def confidence(score_fraction: float, best: float, distinct: float | None,
               full_fraction: float) -> float:
    """Confidence in [0, 1]: evidence term times distinctiveness term.

    ``evidence = min(1, score_fraction / full_fraction)`` grows with the best score;
    ``distinctiveness = 1 - distinct / best`` (1 without a distinct candidate) grows with the
    margin. The product rises with the best score and falls with the distinct candidate's score.
    """
    evidence = min(1.0, max(0.0, score_fraction) / full_fraction)
    if best <= 0:
        return 0.0
    distinctiveness = 1.0 if distinct is None else 1.0 - max(0.0, distinct) / best
    return float(min(1.0, max(0.0, evidence * distinctiveness)))


def decide(
    ids: Sequence[int] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    global_similarities: Sequence[float] | np.ndarray,
    positions: Positions,
    query_feature_count: int,
    config: LocalizerConfig,
    reranked: bool,
) -> Decision:
    """Apply the acceptance rules of ``config`` to candidates in final order."""
    if len(ids) == 0:
        return Decision(False, 0.0, "no candidates: the map is empty", 0.0, 0.0, None)
    best = float(scores[0])
    if reranked:
        fraction = best / query_feature_count if query_feature_count else 0.0
    else:
        fraction = best
    d = distinct_candidate(ids, positions, config)
    distinct = float(scores[d]) if d is not None else None
    if distinct is None:
        margin = math.inf
    elif config.margin_mode == "ratio":
        margin = best / distinct if distinct > 0 else math.inf
    else:
        margin = best - distinct
    reason = ""
    sim = float(global_similarities[0])
    what = "MNN score" if reranked else "global similarity"
    if sim < config.min_global_similarity:
        reason = f"global similarity {sim:.3f} < {config.min_global_similarity:.3f}"
    elif reranked and best < config.min_score:
        reason = f"MNN score {best:.0f} < {config.min_score}"
    elif reranked and fraction < config.min_score_fraction:
        reason = f"MNN score fraction {fraction:.3f} < {config.min_score_fraction:.3f}"
    elif d is not None and margin < config.min_margin:  # no distinct place: infinite margin
        reason = (
            f"{what} margin ({config.margin_mode}) {margin:.3f} < {config.min_margin:.3f}: "
            f"best place {int(ids[0])} scores {best:.4g}, distinct place {int(ids[d])} "
            f"scores {distinct:.4g}"
        )
    if reason:
        return Decision(False, 0.0, reason, fraction, margin, d)
    full = config.confidence_full_fraction if reranked else 1.0
    conf = confidence(fraction, best, distinct, full)
    return Decision(True, conf, "", fraction, margin, d)
