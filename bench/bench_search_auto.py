#!/usr/bin/env python3
"""Global search with the index ``build-map --index auto`` chooses and tunes, at 100k / 1M places.

The map is the synthetic route-structured one of ``bench_search.py`` (random walks on the
sphere with revisits; D=1024). ``tune_index`` chooses the kind and sets ``nprobe`` or
``k_factor`` on a held-out sample of the map's own descriptors for a target recall@100; the
index is then measured on other queries (perturbed revisits, as in ``bench_search.py``):
single-query latency (as tuned, and through the threaded shards a read-only map searches,
when the map is large enough to be split), recall@100 against exact search, recall of the
exact neighbours within 20 places along the road (the rest of an exact top-100 is unrelated
places at background similarity; see bench_descriptor_stats.py), index bytes (as written to
disk = held in memory), the process's peak RSS, build time (train + add + tuning sweep) and
the load average.
``--kinds`` limits the kinds tried (``tune_index`` tries ivfsq8, then pqfs).

    python bench/bench_search_auto.py --sizes 100000 [1000000] --target 0.95 [--kinds pqfs]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_search import random_walk_map, recall, time_queries  # noqa: E402
from selavpr_ros.map.index import TUNE_KINDS, threaded_shards, tune_index, write_index  # noqa: E402

NEAR_PLACES = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100000])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--kinds", nargs="+", default=list(TUNE_KINDS), choices=TUNE_KINDS)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        rng = np.random.default_rng(n)
        t0 = time.perf_counter()
        route = random_walk_map(n, args.dim, rng, args.queries)  # the same map and queries
        db, queries = route.descriptors, route.queries
        print(f"map {n} x {args.dim} in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        load_before = os.getloadavg()[0]
        index, tuned = tune_index(db, args.target, k=args.k, kinds=tuple(args.kinds))
        build_s = time.perf_counter() - t0
        spec = tuned.spec
        print(f"tuned {spec.kind} nlist {spec.nlist} nprobe {spec.nprobe} k_factor "
              f"{spec.k_factor}: held-out recall "
              f"{spec.tuned_recall:.4f}, {build_s:.0f} s", flush=True)
        _, exact = faiss.knn(queries, db, args.k, metric=faiss.METRIC_INNER_PRODUCT)
        latency, ids = time_queries(index, queries, args.k)
        sharded = threaded_shards(index, spec)
        shards = sharded.count() if isinstance(sharded, faiss.IndexShards) else 1
        shard_latency, shard_ids = time_queries(sharded, queries, args.k) if shards > 1 else (
            latency, ids)
        # the exact neighbours on the query's own stretch of road (any visit), found or not
        near = np.abs(route.location[exact] - route.query_location[:, None]) <= NEAR_PLACES
        found_near = sum(len(set(e[m]) & set(f)) for e, m, f in zip(exact, near, ids, strict=True))
        with tempfile.TemporaryDirectory() as tmp:
            write_index(index, Path(tmp) / "index.faiss")
            index_bytes = (Path(tmp) / "index.faiss").stat().st_size
        rows.append({
            "places": n, "kind": spec.kind, "nlist": spec.nlist, "nprobe": spec.nprobe,
            "k_factor": spec.k_factor, "pq_m": spec.pq_m,
            "coarse": spec.coarse, "target": args.target, "held_out_recall": spec.tuned_recall,
            "query_ms": latency * 1e3, "recall_at_k": recall(ids, exact), "k": args.k,
            "shards": shards, "sharded_query_ms": shard_latency * 1e3,
            "sharded_recall_at_k": recall(shard_ids, exact),
            "near_in_exact_top_k": float(near.mean()),
            "recall_of_near": found_near / max(1, int(near.sum())),
            "index_bytes": index_bytes, "index_bytes_per_place": index_bytes / n,
            "build_s": build_s, "train_add_s": tuned.build_s,
            "sweep": [{"kind": kd, "setting": v, "recall": r, "ms": ms}
                      for kd, v, r, ms in tuned.sweep],
            "load_average": [load_before, *os.getloadavg()],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        })
        print(json.dumps(rows[-1]), flush=True)
        del index, sharded, db
    print(json.dumps({"bench": "search_auto", "dim": args.dim, "k": args.k,
                      "threads": faiss.omp_get_max_threads(), "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
