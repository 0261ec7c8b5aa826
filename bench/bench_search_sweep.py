"""IVF nprobe and HNSW efSearch sweeps: the smallest setting with recall@K >= a target.

One index per kind is built on the synthetic route-structured map of ``bench_search.py`` and
searched at every setting (search parameters need no rebuild), so a sweep costs one build.
IVF is trained on a subsample of at most ``--train`` places (faiss needs ~39 per list), which is
what makes a 1M-place build feasible on a small machine.

    python bench/bench_search_sweep.py --size 100000 --kinds ivf hnsw
    python bench/bench_search_sweep.py --size 1000000 --kinds ivf --train 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import queries_from, recall, synthetic_map, time_queries  # noqa: E402
from selavpr_ros.map.index import auto_nlist  # noqa: E402

NPROBES = (16, 32, 64, 96, 128, 192, 256, 384, 512)
EF_SEARCH = (128, 256, 384, 512, 768, 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--kinds", nargs="+", default=["ivf"], choices=["ivf", "hnsw"])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--train", type=int, default=200000, help="IVF training subsample")
    parser.add_argument("--nprobes", type=int, nargs="+", default=list(NPROBES))
    parser.add_argument("--ef-search", type=int, nargs="+", default=list(EF_SEARCH))
    args = parser.parse_args()

    n, dim, k = args.size, args.dim, args.k
    rng = np.random.default_rng(n)
    t0 = time.perf_counter()
    db = synthetic_map(n, dim, rng)
    queries = queries_from(db, args.queries, rng)
    print(f"map {n} x {dim} in {time.perf_counter() - t0:.0f} s", flush=True)
    flat = faiss.IndexFlatIP(dim)
    flat.add(db)
    exact_ms, exact = time_queries(flat, queries, k)
    del flat
    rows: list[dict] = []
    for kind in args.kinds:
        t0 = time.perf_counter()
        if kind == "ivf":
            nlist = auto_nlist(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
            train = db if n <= args.train else db[rng.choice(n, args.train, replace=False)]
            index.train(train)
            settings = args.nprobes
        else:
            nlist = None
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 200
            settings = args.ef_search
        index.add(db)
        build_s = time.perf_counter() - t0
        print(f"{kind}: built in {build_s:.0f} s", flush=True)
        for value in settings:
            if kind == "ivf":
                if value > nlist:
                    continue
                index.nprobe = value
            else:
                index.hnsw.efSearch = max(value, k)
            latency, ids = time_queries(index, queries, k)
            row = {"places": n, "kind": kind, "nlist": nlist, "setting": value,
                   "query_ms": latency * 1e3, "recall_at_k": recall(ids, exact),
                   "build_s": build_s}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del index
    best = {}
    for kind in args.kinds:
        ok = [r for r in rows if r["kind"] == kind and r["recall_at_k"] >= args.target]
        best[kind] = min(ok, key=lambda r: r["setting"]) if ok else None
    print(json.dumps({"bench": "search_sweep", "places": n, "dim": dim, "k": k,
                      "target": args.target, "flat_query_ms": exact_ms * 1e3,
                      "threads": faiss.omp_get_max_threads(), "rows": rows, "best": best}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
