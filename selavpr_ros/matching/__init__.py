"""MNN re-ranking of candidates by their local features (numpy + torch only, no faiss)."""

from selavpr_ros.matching.mnn import (
    DEFAULT_MEMORY_BUDGET,
    MatchPairs,
    MnnMatches,
    chunk_size_for_budget,
    mnn_matches,
    mnn_scores,
)

__all__ = ["DEFAULT_MEMORY_BUDGET", "MatchPairs", "MnnMatches", "chunk_size_for_budget",
           "mnn_matches", "mnn_scores"]
