"""Mutual-nearest-neighbour pairs between one query and one place.

These are the correspondences of geometry, by the rule ``matching.mnn.mnn_scores`` counts.
For one candidate, so the (L_place, L_query) similarity is computed whole with the product the
chunked reference method uses; ties go to the first index (torch's argmax), invalid features
never match, and the extractor's match filter (ratio or minimum similarity) is applied as there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from selavpr_ros.extractors.base import RerankSettings


@dataclass(frozen=True, eq=False)
class MatchPairs:
    """N mutual nearest neighbours: query feature, place feature, cosine similarity."""

    query: np.ndarray  # (N,) int64 flat query feature indices
    place: np.ndarray  # (N,) int64 flat place feature indices
    similarity: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return int(self.query.shape[0])


def _flat(x: np.ndarray | torch.Tensor, channels: int) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x))
    return t.reshape(-1, channels).to(torch.float32)


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
    channels = int(query.shape[-1])
    if int(place.shape[-1]) != channels:
        raise ValueError(f"query has {channels} channels but the place has {place.shape[-1]}")
    q = _flat(query, channels)
    c = _flat(place, channels)
    lq, lc = q.shape[0], c.shape[0]
    empty = MatchPairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if lq == 0 or lc == 0:
        return empty
    qm = None if query_mask is None else torch.from_numpy(
        np.asarray(query_mask, bool).reshape(-1))
    cm = None if place_mask is None else torch.from_numpy(
        np.asarray(place_mask, bool).reshape(-1))
    with torch.no_grad():
        sim = torch.matmul(c[None], q.T.contiguous())[0]  # (L_place, L_query)
        if cm is not None:
            sim.masked_fill_(~cm[:, None], float("-inf"))
        if qm is not None:
            sim.masked_fill_(~qm[None, :], float("-inf"))
        best_c = torch.argmax(sim, dim=0)  # nearest place feature of each query feature
        best_q = torch.argmax(sim, dim=1)  # nearest query feature of each place feature
        mutual = best_q[best_c] == torch.arange(lq)
        if qm is not None:
            mutual &= qm
        if cm is not None:
            mutual &= cm[best_c]
        best_sim = sim.gather(0, best_c[None])[0]
        if rerank.match_filter == "min_similarity":
            mutual &= best_sim >= rerank.min_similarity
        elif rerank.match_filter == "ratio" and lc >= 2:
            top2 = torch.topk(sim, 2, dim=0).values
            dist = torch.sqrt(torch.clamp(2.0 - 2.0 * top2, min=0.0))
            mutual &= dist[0] < rerank.ratio * dist[1]
        keep = torch.nonzero(mutual).reshape(-1)
        return MatchPairs(
            query=keep.numpy().astype(np.int64),
            place=best_c[keep].numpy().astype(np.int64),
            similarity=best_sim[keep].numpy().astype(np.float32),
        )
