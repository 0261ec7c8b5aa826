"""Mutual-nearest-neighbour (MNN) re-ranking scores, exact and with bounded memory.

The score of a candidate is the number of query local features whose nearest candidate feature
(by dot product) has that same query feature as its nearest neighbour — SelaVPR's re-ranking
score (docs/selavpr-reference.md §3.2). The reference builds one (K, L, L) similarity tensor for
all K candidates (5.5 GB for K=100 at 61x61); here candidates are processed in chunks sized from
a memory budget, which gives the same counts because every candidate's similarity matrix is
computed by the same batched matmul and reduced by the same argmax (first index on ties).

Project decision (differs from the reference): a candidate with exactly one mutual match scores
1, not 0. Invalid (masked) features are never matched.

This module imports only numpy and torch so that it runs where faiss is not installed.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch

from selavpr_ros.errors import ConfigError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16"]
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of working memory per chunk of candidates


def chunk_size_for_budget(
    query_count: int,
    candidate_count: int,
    channels: int,
    memory_budget: int,
    element_bytes: int = 4,
) -> int:
    """How many candidates fit in ``memory_budget`` bytes of working memory (at least 1).

    Per candidate the chunk holds the (L_cand, L_query) similarity matrix, the candidate's
    features in their source and compute dtypes, and a few index vectors.
    """
    per_candidate = (
        candidate_count * query_count * element_bytes  # similarity matrix
        + candidate_count * channels * (element_bytes + 4)  # features: compute + source copy
        + (candidate_count + 3 * query_count) * 8  # argmax indices, gather, counts
        + 4 * query_count * (element_bytes + 8)  # top-2 values/indices for the ratio test
    )
    return max(1, int(memory_budget // per_candidate))


def _to_tensor(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.to(device)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device)


def _flatten_query(query: np.ndarray | torch.Tensor) -> tuple[tuple[int, ...], int]:
    if query.ndim not in (2, 3):
        raise ValueError(f"query must be (L, C) or (H, W, C), got shape {tuple(query.shape)}")
    return tuple(query.shape), int(query.shape[-1])


def mnn_scores(
    query: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    *,
    query_mask: np.ndarray | torch.Tensor | None = None,
    candidate_mask: np.ndarray | torch.Tensor | None = None,
    match_filter: str = "none",
    ratio: float = 0.8,
    min_similarity: float = 0.0,
    device: str | torch.device | None = None,
    precision: Precision = "fp32",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Mutual-nearest-neighbour counts of K candidates against one query.

    Args:
        query: (L, C) or (H, W, C) local features (numpy or torch, float16/float32).
        candidates: (K, L', C) or (K, H', W', C) local features of the K candidates.
        query_mask: (L,) or (H, W) bool, True for valid query features; None = all valid.
        candidate_mask: (K, L') or (K, H', W') bool; None = all valid.
        match_filter: "none" (plain count, SelaVPR), "ratio" (keep a mutual match only if
            ``d1 < ratio * d2`` for the query feature's two nearest candidate features, with
            ``d = sqrt(2 - 2 s)`` as for unit vectors) or "min_similarity" (keep it only if the
            similarity is at least ``min_similarity``).
        device: where to compute; default: the query tensor's device, else CPU.
        precision: "fp32" (exact reference counts) or "fp16" (CUDA only; faster, counts can
            differ slightly on near ties).
        memory_budget: bytes of working memory per chunk; sets the chunk size.
        chunk_size: candidates per chunk; overrides ``memory_budget`` when given.

    Returns:
        (K,) int64 counts.
    """
    if match_filter not in ("none", "ratio", "min_similarity"):
        raise ConfigError(f"unknown match_filter {match_filter!r}")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if device is None:
        device = query.device if torch.is_tensor(query) else "cpu"
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' is only supported on CUDA devices")
    dtype = torch.float16 if precision == "fp16" else torch.float32

    _, channels = _flatten_query(query)
    if candidates.ndim not in (3, 4):
        raise ValueError(f"candidates must be (K, L, C) or (K, H, W, C), got {candidates.shape}")
    if int(candidates.shape[-1]) != channels:
        raise ValueError(
            f"query has {channels} channels but candidates have {candidates.shape[-1]}"
        )
    num = int(candidates.shape[0])
    q = _to_tensor(query, device).reshape(-1, channels).to(dtype)
    lq = q.shape[0]
    lc = int(np.prod(candidates.shape[1:-1]))
    counts = np.zeros(num, dtype=np.int64)
    if num == 0 or lq == 0 or lc == 0:
        return counts

    qm = None
    if query_mask is not None:
        qm = _to_tensor(query_mask, device).reshape(-1).to(torch.bool)
        if qm.shape[0] != lq:
            raise ValueError(f"query_mask has {qm.shape[0]} entries for {lq} query features")
    if candidate_mask is not None and tuple(candidate_mask.shape[:1]) != (num,):
        raise ValueError(f"candidate_mask must have {num} rows, got {candidate_mask.shape}")

    if chunk_size is None:
        chunk_size = chunk_size_for_budget(lq, lc, channels, memory_budget, dtype.itemsize)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    q_t = q.T.contiguous()
    query_ids = torch.arange(lq, device=device)
    for start in range(0, num, chunk_size):
        stop = min(num, start + chunk_size)
        c = _to_tensor(candidates[start:stop], device).reshape(stop - start, lc, channels)
        sim = torch.matmul(c.to(dtype), q_t)  # (n, L_cand, L_query), as in the reference
        del c
        cm = None
        if candidate_mask is not None:
            cm = _to_tensor(candidate_mask[start:stop], device).reshape(stop - start, lc)
            cm = cm.to(torch.bool)
            sim.masked_fill_(~cm[:, :, None], float("-inf"))
        if qm is not None:
            sim.masked_fill_(~qm[None, None, :], float("-inf"))
        best_c = torch.argmax(sim, dim=1)  # (n, L_query): nearest candidate feature
        best_q = torch.argmax(sim, dim=2)  # (n, L_cand): nearest query feature
        mutual = torch.gather(best_q, 1, best_c) == query_ids
        if qm is not None:
            mutual &= qm
        if cm is not None:
            mutual &= torch.gather(cm, 1, best_c)
        if match_filter == "min_similarity":
            best_sim = torch.gather(sim, 1, best_c[:, None, :])[:, 0, :]
            mutual &= best_sim.float() >= min_similarity
        elif match_filter == "ratio":
            mutual &= _ratio_test(sim, ratio)
        counts[start:stop] = mutual.sum(dim=1).cpu().numpy()
        del sim, best_c, best_q, mutual
    return counts


def _ratio_test(sim: torch.Tensor, ratio: float) -> torch.Tensor:
    """(n, L_query) bool: the nearest candidate feature is clearly nearer than the second."""
    if sim.shape[1] < 2:
        return torch.ones(sim.shape[0], sim.shape[2], dtype=torch.bool, device=sim.device)
    top2 = torch.topk(sim, 2, dim=1).values.float()  # (n, 2, L_query), best first
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * top2, min=0.0))
    return dist[:, 0, :] < ratio * dist[:, 1, :]
