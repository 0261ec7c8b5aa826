#!/usr/bin/env python3
"""How route-like are the synthetic global descriptors? Statistics against real descriptors.

A real map's global descriptors change smoothly along the route and share much of their
direction (unrelated places are not orthogonal), so a query's exact top-100 is mostly places
near it along the route and at revisits. This prints, for a set of descriptors with known route
positions: cosine similarity against the offset along the route (1, 2, 5, 10, 20, 50 places),
the similarity of unrelated places (offset > 50: mean and spread), the same place on another
traversal, the effective dimension (participation ratio of the centred covariance spectrum),
and, for synthetic maps, where the exact top-100 of sample queries lie along the route and the
similarity at ranks 1 / 10 / 100.

Real reference: Gardens Point Walking (200 images per traversal) with the classical extractor
(VLAD over dense RootSIFT, vocabulary fitted on day_left). SelaVPR descriptors are left out:
only random weights exist here, and an untrained network's statistics say nothing about a
trained one's.

    python bench/bench_descriptor_stats.py [--places 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_search import GENERATORS, RouteMap  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gardens_point_walking"
OFFSETS = (1, 2, 5, 10, 20, 50)
GP_PLACES = 200  # images per Gardens Point traversal


def along_route(desc: np.ndarray, offsets: tuple[int, ...] = OFFSETS) -> dict[str, float]:
    """Mean cosine of places ``d`` apart in one traversal, and of unrelated places (> 50)."""
    sims = desc @ desc.T
    n = len(desc)
    out = {f"sim_offset_{d}": float(np.mean(np.diagonal(sims, d))) for d in offsets if d < n}
    far = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) > 50
    out["sim_unrelated_mean"] = float(sims[far].mean())
    out["sim_unrelated_std"] = float(sims[far].std())
    return out


def effective_dim(desc: np.ndarray) -> float:
    """Participation ratio (sum l)^2 / sum l^2 of the centred covariance eigenvalues."""
    centred = desc - desc.mean(0)
    sv = np.linalg.svd(centred, compute_uv=False) ** 2
    return float(sv.sum() ** 2 / (sv**2).sum())


def gardens_point(data: Path) -> dict[str, dict[str, float]]:
    from selavpr_ros.extractors.classical import ClassicalExtractor
    from selavpr_ros.io.images import read_image_file

    traversals = {name: [read_image_file(f) for f in sorted((data / name).glob("*.jpg"))]
                  for name in ("day_left", "day_right")}
    extractor = ClassicalExtractor().fit(traversals["day_left"])
    desc = {t: np.concatenate([extractor.extract([im]).global_desc for im in images]).astype(
        np.float32) for t, images in traversals.items()}
    stats = along_route(desc["day_left"])
    stats["sim_same_place_other_traversal"] = float(
        np.mean(np.sum(desc["day_left"] * desc["day_right"], 1)))
    stats["effective_dim"] = effective_dim(desc["day_left"])
    stats["dim"] = desc["day_left"].shape[1]
    return {"gardens_point_vlad": stats}


def synthetic(route_map: RouteMap) -> dict[str, float]:
    """Statistics of one synthetic map; one traversal = the first drive's places in order.

    The same-place similarity is of each query to a map place at its location (another
    visit, as day_right is of day_left).
    """
    db, loc = route_map.descriptors, route_map.location
    first = np.arange(GP_PLACES)  # the first drive: locations 0..route_len-1 in order
    stats = along_route(db[first])
    stats["effective_dim"] = effective_dim(db[first])
    stats["dim"] = db.shape[1]
    q, q_loc = route_map.queries, route_map.query_location
    sims, ids = faiss.knn(q, db, 100, metric=faiss.METRIC_INNER_PRODUCT)
    offset = np.abs(loc[ids] - q_loc[:, None])  # along the road, any visit
    stats["top100_within_5_places"] = float((offset <= 5).mean())
    stats["top100_within_20_places"] = float((offset <= 20).mean())
    stats["top100_route_offset_median"] = float(np.median(offset))
    for r in (1, 10, 100):
        stats[f"sim_rank_{r}"] = float(sims[:, r - 1].mean())
    order = np.argsort(loc, kind="stable")
    same = order[np.searchsorted(loc[order], q_loc)]  # a map place at the query's location
    stats["sim_same_place_other_traversal"] = float(np.mean(np.sum(q * db[same], 1)))
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--places", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--generators", nargs="*", default=list(GENERATORS))
    parser.add_argument("--no-real", action="store_true")
    args = parser.parse_args()
    real = not args.no_real and (args.data / "day_left").is_dir()
    if not args.no_real and not real:
        print(f"Gardens Point not found at {args.data}: synthetic statistics only")
    rows = gardens_point(args.data) if real else {}
    for name in args.generators:
        rng = np.random.default_rng(args.places)
        rows[f"synthetic_{name}_{args.places}"] = synthetic(
            GENERATORS[name](args.places, args.dim, rng, args.queries))
    keys = sorted({k for r in rows.values() for k in r})
    print(f"{'statistic':>32} " + " ".join(f"{n[:26]:>26}" for n in rows))
    for key in keys:
        print(f"{key:>32} " + " ".join(
            f"{r[key]:>26.4f}" if key in r else f"{'-':>26}" for r in rows.values()))
    print(json.dumps({"bench": "descriptor_stats", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
