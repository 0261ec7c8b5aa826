"""A plain, unchunked re-implementation of the reference's MNN score, for comparison only.

This follows ``local_matching.match_batch_tensor(..., trainflag=False)`` of Lu-Feng/SelaVPR as
described in docs/model.md ("Re-ranking"): one batched matmul over all K candidates (so it
needs K * L_cand * L_query * 4 bytes, 5.5 GB for K=100 at 61x61), argmax over both axes, the
mutual check, and a count per candidate (``reference_mnn_pairs``: the pairs behind the count,
as the reference's ``valid[i].nonzero()`` and ``max1`` give them). The tests and
``bench_matching.py`` compare ``selavpr_ros.matching.mnn_scores`` (and ``mnn_matches``)
with it. It deliberately shares no code with the package.

The only optional difference from the reference is ``single_match_quirk``: the reference scores
a candidate with exactly one mutual match as 0 (``nonzero().squeeze()`` becomes 0-d); the project
counts it as 1 (the default here). Pass ``single_match_quirk=True`` to get the reference's 0.
"""

from __future__ import annotations

import numpy as np
import torch


def reference_mnn_scores(
    query: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
    *,
    single_match_quirk: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """MNN counts of K candidates against one query, computed as the reference does.

    Args:
        query: (L, C) or (H, W, C) local features of the query.
        candidates: (K, L, C) or (K, H, W, C) local features of K candidates.
        single_match_quirk: reproduce the reference's "one match scores 0".
        device: where the (K, L, L) similarity tensor is built.

    Returns:
        (K,) int64 counts.
    """
    fm1 = torch.as_tensor(np.asarray(query) if not torch.is_tensor(query) else query)
    fm2 = torch.as_tensor(
        np.asarray(candidates) if not torch.is_tensor(candidates) else candidates
    )
    channels = fm1.shape[-1]
    fm1 = fm1.to(device=device, dtype=torch.float32).reshape(-1, channels)
    fm2 = fm2.to(device=device, dtype=torch.float32).reshape(fm2.shape[0], -1, channels)
    m_sim = torch.matmul(fm2, fm1.T)  # (N, l_cand, l_query)
    max1 = torch.argmax(m_sim, dim=1)  # best candidate feature for each query feature
    max2 = torch.argmax(m_sim, dim=2)  # best query feature for each candidate feature
    m = max2[torch.arange(m_sim.shape[0], device=device).reshape((-1, 1)), max1]
    valid = torch.arange(m_sim.shape[-1], device=device).repeat((m_sim.shape[0], 1)) == m
    scores = np.zeros(fm2.shape[0], dtype=np.int64)
    for i in range(fm2.shape[0]):
        idx1 = valid[i].nonzero().squeeze()
        if idx1.dim() == 0:
            scores[i] = 0 if single_match_quirk else 1
        else:
            scores[i] = len(idx1)
    return scores


def reference_mnn_pairs(
    query: np.ndarray | torch.Tensor,
    candidates: np.ndarray | torch.Tensor,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return per candidate (query indices, candidate indices) of its mutual pairs.

    As the reference finds them: the query features where ``valid`` holds, and ``max1`` there.
    """
    fm1 = torch.as_tensor(np.asarray(query) if not torch.is_tensor(query) else query)
    fm2 = torch.as_tensor(
        np.asarray(candidates) if not torch.is_tensor(candidates) else candidates
    )
    channels = fm1.shape[-1]
    fm1 = fm1.to(dtype=torch.float32).reshape(-1, channels)
    fm2 = fm2.to(dtype=torch.float32).reshape(fm2.shape[0], -1, channels)
    m_sim = torch.matmul(fm2, fm1.T)  # (N, l_cand, l_query)
    max1 = torch.argmax(m_sim, dim=1)
    max2 = torch.argmax(m_sim, dim=2)
    m = max2[torch.arange(m_sim.shape[0]).reshape((-1, 1)), max1]
    valid = torch.arange(m_sim.shape[-1]).repeat((m_sim.shape[0], 1)) == m
    out = []
    for i in range(fm2.shape[0]):
        idx1 = valid[i].nonzero().reshape(-1)
        out.append((idx1.numpy().astype(np.int64), max1[i, idx1].numpy().astype(np.int64)))
    return out


def loop_mnn_scores(query: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Count the same by explicit numpy loops (tiny inputs): a second, torch-free opinion."""
    channels = query.shape[-1]
    q = np.asarray(query, dtype=np.float64).reshape(-1, channels)
    cands = np.asarray(candidates, dtype=np.float64).reshape(len(candidates), -1, channels)
    out = np.zeros(len(cands), dtype=np.int64)
    for n, c in enumerate(cands):
        sim = c @ q.T
        for j in range(q.shape[0]):
            i = int(np.argmax(sim[:, j]))  # np.argmax returns the first index of a tie
            if int(np.argmax(sim[i, :])) == j:
                out[n] += 1
    return out
