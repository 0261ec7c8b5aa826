"""Mutual-nearest-neighbour pairs between one query and one place.

The re-ranker (:func:`selavpr_ros.matching.mnn_matches`) computes them; this is its
one-candidate form for callers that have not re-ranked (loop verification, tests), so every
pair in the package comes from the same computation as the counts.
"""

from __future__ import annotations

import numpy as np
import torch

from selavpr_ros.extractors.base import RerankSettings
from selavpr_ros.matching import MatchPairs, mnn_matches


def mnn_pairs(
    query: np.ndarray | torch.Tensor,
    place: np.ndarray | torch.Tensor,
    *,
    query_mask: np.ndarray | None = None,
    place_mask: np.ndarray | None = None,
    rerank: RerankSettings | None = None,
) -> MatchPairs:
    """Mutual nearest neighbours of (L, C) query and (L', C) place local features.

    Grid features may be given as (H, W, C); indices are then flat (row-major).
    """
    rerank = rerank or RerankSettings()
    if int(place.shape[-1]) != int(query.shape[-1]):
        raise ValueError(f"query has {query.shape[-1]} channels but the place has "
                         f"{place.shape[-1]}")
    matches = mnn_matches(
        query, place[None], query_mask=query_mask,
        candidate_mask=None if place_mask is None else np.asarray(place_mask, bool)[None],
        match_filter=rerank.match_filter, ratio=rerank.ratio,
        min_similarity=rerank.min_similarity, device="cpu")
    return matches.pairs(0)
