"""Triplets by distance and hard mining from a cache of global descriptors (``partial`` mining).

Every mining round (``cache_refresh`` queries) draws that many queries that have a positive and
``negatives_sample`` random database images, computes their global descriptors (and those of
every positive of the drawn queries) with the current weights, and keeps for each query:

* the positive nearest in descriptor space among the frames within ``positive_radius_m``;
* the ``negatives_per_query`` nearest sampled images among those beyond ``negative_radius_m``
  (images between the two radii are neither).

The draws come from a generator seeded by ``(seed, epoch, round)``, so a resumed run draws what
the interrupted run drew, without storing generator state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.eval.metrics import positives_by_radius
from selavpr_ros.train.config import TrainConfig

log = logging.getLogger(__name__)

Describe = Callable[[np.ndarray], np.ndarray]  # image indices -> (n, D) global descriptors


class TripletMiner:
    """Knows who is near whom; mines (query, positive, negatives...) index rows.

    Args:
        positions: (N, 3) positions of every training image (global index).
        drive_ids: (N,) drive of each image.
        config: radii, counts, seed.

    Raises:
        ConfigError: fewer queries with a positive than one batch needs.
    """

    def __init__(self, positions: np.ndarray, drive_ids: np.ndarray, config: TrainConfig) -> None:
        self.config = config
        self.positions = np.asarray(positions, np.float64).reshape(-1, 3)
        self.drive_ids = np.asarray(drive_ids, np.int64)
        within = positives_by_radius(self.positions, self.positions, config.positive_radius_m)
        self.positives: list[np.ndarray] = []
        for q, ids in enumerate(within):
            keep = ids != q
            if not config.positives_from_same_drive:
                keep &= self.drive_ids[ids] != self.drive_ids[q]
            self.positives.append(ids[keep])
        self.queries = np.array([q for q, p in enumerate(self.positives) if len(p)], np.int64)
        if len(self.queries) < config.batch_queries:
            where = "" if config.positives_from_same_drive else " in another drive"
            raise ConfigError(
                f"too few positives: {len(self.queries)} of {len(self.positions)} training images "
                f"have another image{where} within {config.positive_radius_m} m (one batch "
                f"needs {config.batch_queries}); do the drives cover the same places, in the "
                "same frame?")

    def draw(self, epoch: int, round_index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw (queries, negative pool) of one mining round, a pure function of its arguments."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, epoch, round_index])
        queries = rng.choice(self.queries, size=min(count, len(self.queries)), replace=False)
        pool = rng.choice(len(self.positions), size=min(cfg.negatives_sample,
                                                          len(self.positions)), replace=False)
        return queries.astype(np.int64), np.sort(pool).astype(np.int64)

    def mine(self, queries: np.ndarray, pool: np.ndarray, describe: Describe) -> np.ndarray:
        """(n, 2 + negatives_per_query) rows ``query, positive, negatives...``.

        Queries without enough negatives in the pool are left out.
        """
        cfg = self.config
        needed = np.unique(np.concatenate([queries, pool, *(self.positives[q] for q in queries)]))
        descriptors = describe(needed)
        row_of = {int(i): r for r, i in enumerate(needed)}

        def desc(ids: np.ndarray) -> np.ndarray:
            return descriptors[[row_of[int(i)] for i in ids]]

        pool_desc = desc(pool)
        pool_xy = self.positions[pool, :2]
        rows = []
        for q in queries:
            qd = desc(np.array([q]))[0]
            pos = self.positives[q]
            positive = pos[int(np.argmin(((desc(pos) - qd) ** 2).sum(axis=1)))]
            far = ((pool_xy - self.positions[q, :2]) ** 2).sum(axis=1) > cfg.negative_radius_m**2
            candidates = np.flatnonzero(far)
            if len(candidates) < cfg.negatives_per_query:
                continue
            d2 = ((pool_desc[candidates] - qd) ** 2).sum(axis=1)
            hardest = candidates[np.argsort(d2, kind="stable")[: cfg.negatives_per_query]]
            rows.append([int(q), int(positive), *(int(pool[h]) for h in hardest)])
        if len(rows) < len(queries):
            log.info("mining: %d of %d queries had too few negatives beyond %.0f m",
                     len(queries) - len(rows), len(queries), cfg.negative_radius_m)
        width = 2 + cfg.negatives_per_query
        return np.array(rows, np.int64).reshape(-1, width)
