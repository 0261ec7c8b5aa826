"""Benchmark: global search over maps of 1k/10k/100k places, exact vs IVF vs HNSW (faiss).

Run from the repository root: ``python bench/bench_search.py [--sizes 1000 10000 100000]``.
Descriptors are synthetic but shaped like a real map: routes are random walks on the unit
sphere (consecutive places are similar), and part of each later route revisits an earlier one
(near-duplicates far apart in id), so neighbourhoods are clustered, not i.i.d. Queries are
revisits too: perturbed copies of map places. Indexes are built with the map's own
``selavpr_ros.map.index.build_index`` (defaults of IndexSpec unless overridden).
Reports build time, single-query latency (one query at a time, as the localizer searches),
serialized index bytes per place, and recall@k of each index against exact search.
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selavpr_ros.map.index import IndexSpec, build_index, configure_search  # noqa: E402


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@dataclass
class RouteMap:
    """Synthetic map descriptors with each place's position along the road network.

    ``location`` numbers the road: consecutive locations are consecutive places of one drive,
    and a revisit has the location of the place it revisits. ``queries`` are later visits of
    map places (at ``query_location``).
    """

    descriptors: np.ndarray
    location: np.ndarray
    queries: np.ndarray
    query_location: np.ndarray
    route_len: int


def synthetic_map(n: int, dim: int, rng: np.random.Generator, route_len: int = 500,
                  step: float = 0.15, revisit: float = 0.3, noise: float = 0.35) -> np.ndarray:
    """Make the issue-18 map: isotropic random walks on the sphere with revisits.

    Each step moves by 0.6 of the unit radius in a random direction, so a place keeps cosine
    ~0.86 with the next one and ~0.2 with the one 10 places on; beyond ~15 places its route is
    as unrelated as any random vector. bench_descriptor_stats.py measures why that is not how
    real descriptors behave; kept to reproduce the earlier figures.
    """
    return random_walk_map(n, dim, rng, 0, route_len, step, revisit, noise).descriptors


def random_walk_map(n: int, dim: int, rng: np.random.Generator, queries: int,
                    route_len: int = 500, step: float = 0.15, revisit: float = 0.3,
                    noise: float = 0.35) -> RouteMap:
    """``synthetic_map`` with locations, and ``queries`` perturbed copies of map places."""
    out = np.empty((n, dim), np.float32)
    location = np.arange(n)
    filled = 0
    while filled < n:
        length = min(route_len, n - filled)
        walk = np.empty((length, dim), np.float32)
        x = unit_rows(rng.standard_normal((1, dim)).astype(np.float32))[0]
        for t in range(length):
            x = x + step * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim) * 4
            x /= np.linalg.norm(x)
            walk[t] = x
        if filled > route_len:  # revisit part of an earlier stretch of road
            span = int(revisit * length)
            src = rng.integers(0, filled - span)
            walk[:span] = out[src : src + span] + noise * rng.standard_normal(
                (span, dim)).astype(np.float32) / np.sqrt(dim)
            unit_rows(walk[:span])
            location[filled : filled + span] = location[src : src + span]
        out[filled : filled + length] = walk
        filled += length
    q, picks = queries_from(out, queries, rng, return_picks=True) if queries else (
        np.empty((0, dim), np.float32), np.empty(0, np.int64))
    return RouteMap(out, location, q, location[picks], route_len)


GENERATORS = {"random_walk": random_walk_map}


def queries_from(db: np.ndarray, count: int, rng: np.random.Generator, noise: float = 0.4,
                 return_picks: bool = False) -> Any:
    """Perturbed copies of ``count`` random map places (and, optionally, which places)."""
    picks = rng.integers(0, len(db), count)
    q = db[picks] + noise * rng.standard_normal((count, db.shape[1])).astype(np.float32) / np.sqrt(
        db.shape[1])
    q = unit_rows(q.astype(np.float32))
    return (q, picks) if return_picks else q


def time_queries(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Median single-query latency (s) and the (Q, k) ids."""
    index.search(queries[:5], k)  # warm-up
    ids = np.empty((len(queries), k), np.int64)
    times = []
    for i in range(len(queries)):
        start = time.perf_counter()
        _, found = index.search(queries[i : i + 1], k)
        times.append(time.perf_counter() - start)
        ids[i] = found[0]
    return statistics.median(times), ids


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a) & set(e)) for a, e in zip(approx, exact, strict=True))
    return hits / exact.size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"],
                        choices=["flat", "ivf", "ivfpq", "hnsw"])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, default=IndexSpec().nprobe)
    parser.add_argument("--ef-search", type=int, default=IndexSpec().ef_search)
    parser.add_argument("--ef-construction", type=int, default=IndexSpec().ef_construction)
    parser.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads (0: all)")
    parser.add_argument(
        "--hnsw-max-places", type=int, default=20000,
        help="skip HNSW above this map size (building 100k x 1024 takes ~8 min on 2 cores); "
             "0 = no limit")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    rows = []
    for n in args.sizes:
        rng = np.random.default_rng(n)
        db = synthetic_map(n, args.dim, rng)
        queries = queries_from(db, args.queries, rng)
        k = min(args.k, n)
        exact_ids = None
        for kind in args.kinds:
            if kind == "hnsw" and 0 < args.hnsw_max_places < n:
                print(f"skipping hnsw at {n} places (--hnsw-max-places {args.hnsw_max_places})")
                continue
            spec = IndexSpec(kind, nprobe=args.nprobe, ef_search=args.ef_search,
                             ef_construction=args.ef_construction, use_gpu=False)
            start = time.perf_counter()
            index, spec = build_index(spec, db)
            build_s = time.perf_counter() - start
            configure_search(index, spec)
            latency, ids = time_queries(index, queries, k)
            if kind == "flat":
                exact_ids = ids
            size = len(faiss.serialize_index(index))
            rows.append({
                "places": n, "kind": kind, "nlist": spec.nlist if "ivf" in kind else None,
                "build_s": build_s, "query_ms": latency * 1e3,
                "bytes_per_place": size / n,
                "recall_at_k": recall(ids, exact_ids) if exact_ids is not None else None,
                "k": k,
            })
            del index

    print(f"Global search, D={args.dim}, {args.queries} single queries, k={args.k}, "
          f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
          f"nprobe={args.nprobe}, efSearch={args.ef_search}, "
          f"efConstruction={args.ef_construction}")
    print(f"{'places':>8} {'index':>6} {'nlist':>6} {'build s':>8} {'query ms':>9} "
          f"{'B/place':>8} {'recall@k':>9}")
    for r in rows:
        nlist = "-" if r["nlist"] is None else str(r["nlist"])
        rec = "-" if r["recall_at_k"] is None else f"{r['recall_at_k']:.4f}"
        print(f"{r['places']:>8} {r['kind']:>6} {nlist:>6} {r['build_s']:>8.2f} "
              f"{r['query_ms']:>9.3f} {r['bytes_per_place']:>8.0f} {rec:>9}")
    print(json.dumps({"bench": "search", "dim": args.dim, "k": args.k,
                      "threads": faiss.omp_get_max_threads(), "nprobe": args.nprobe,
                      "ef_search": args.ef_search, "ef_construction": args.ef_construction,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
