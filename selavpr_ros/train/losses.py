"""The published losses: triplet margin loss on global descriptors plus the MNN local loss.

Local loss of a triplet (a, p, n): ``max(0, s(a, n) - s(a, p))`` where ``s(a, b)`` is the mean
dot product of the mutual-nearest-neighbour pairs between the local features of a and b. The
pairs are found by arg-max without gradient (as in the reference), the gradient flows through
the dot products of the matched features. Both terms are summed over the triplets and divided
by their number (the reference divides by ``batch * negatives``), weight 1 each.

Project decision: with a single mutual pair the mean is that pair's dot product (the reference
falls back to position-wise dot products there); mutual pairs always exist (the global maximum
of the similarity matrix is mutual).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mnn_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean similarity of mutual nearest neighbours of two (L, C) unit feature sets (scalar)."""
    with torch.no_grad():
        sim = a.detach() @ b.detach().T  # (La, Lb)
        best_b = sim.argmax(dim=1)  # for each a feature, its nearest b feature
        best_a = sim.argmax(dim=0)
        mutual = best_a[best_b] == torch.arange(a.shape[0], device=a.device)
        ia = torch.nonzero(mutual).squeeze(1)
        ib = best_b[ia]
    return (a[ia] * b[ib]).sum(dim=-1).mean()


def local_loss(anchor: torch.Tensor, positive: torch.Tensor,
               negatives: torch.Tensor) -> torch.Tensor:
    """Sum over triplets of ``relu(s(a, n) - s(a, p))``.

    Shapes: anchor, positive (B, L, C); negatives (B, K, L, C).
    """
    total = anchor.new_zeros(())
    for i in range(anchor.shape[0]):
        s_pos = mnn_similarity(anchor[i], positive[i])
        for k in range(negatives.shape[1]):
            total = total + F.relu(mnn_similarity(anchor[i], negatives[i, k]) - s_pos)
    return total


def triplet_losses(local: torch.Tensor, glob: torch.Tensor, negatives_per_query: int,
                   margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(global, local) per-triplet mean losses of a batch laid out query by query.

    Args:
        local: (B * (2 + K), h, w, C) local features; glob: (B * (2 + K), D) global ones; the
            rows of one query are ``query, positive, negative_1 .. negative_K``.
    """
    group = 2 + negatives_per_query
    b = glob.shape[0] // group
    g = glob.float().reshape(b, group, -1)
    loc = local.float().reshape(b, group, -1, local.shape[-1])
    anchors = g[:, :1].expand(-1, negatives_per_query, -1).reshape(-1, g.shape[-1])
    positives = g[:, 1:2].expand(-1, negatives_per_query, -1).reshape(-1, g.shape[-1])
    negatives = g[:, 2:].reshape(-1, g.shape[-1])
    triplets = b * negatives_per_query
    global_loss = F.triplet_margin_loss(anchors, positives, negatives, margin=margin, p=2,
                                        reduction="sum") / triplets
    loss_local = local_loss(loc[:, 0], loc[:, 1], loc[:, 2:]) / triplets
    return global_loss, loss_local
