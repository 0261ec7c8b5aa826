"""Benchmark: exact fp32 MNN re-ranking against this machine's own fp32 GEMM, same shapes.

Run from the repository root: ``python bench/bench_mnn_gemm.py [--k 100] [--grid 61]``.
Re-ranking K candidates is K products of (L, C) x (C, L) (L = grid^2, C = 128) plus the
arg-maxima; its arithmetic is 2 K L^2 C flop. The machine's GEMM throughput is measured on the
same products, two ways, and the faster one is the reference:

- ``gemm_full``: ``torch.mm`` of each candidate's (L, C) features (fp32) with the query's
  (C, L) into one reused (L, L) output, torch's default threads (what the BLAS library gives
  for the whole product; writing the 55 MB output per candidate is part of its cost);
- ``gemm_blocked``: the same products in the row blocks of the tiled method, into one small
  reused block per worker thread (single-threaded BLAS calls, as the tiled method runs them):
  the tiled method with nothing but its products.

Ours is ``mnn_scores`` (fp32, its default method: tiled on the CPU), same features (query
fp32, candidates fp16 as stored in a map). All are timed interleaved, ``--repeats`` times
each; the ratio of median GFLOP/s is printed with the load average (other processes on a
shared machine slow all of them, though not necessarily alike). Prints a table and, last,
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selavpr_ros.matching import mnn, mnn_scores  # noqa: E402


def gemm_full(query: torch.Tensor, cands: torch.Tensor) -> None:
    """Compute the same products as re-ranking, into one reused (L, L) matrix."""
    q_t = query.T.contiguous()
    out = torch.empty(cands.shape[1], query.shape[0])
    for n in range(cands.shape[0]):
        torch.mm(cands[n].float(), q_t, out=out)


def count_agreement(exact: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """How far ``other`` MNN counts are from the exact fp32 ones (summed |difference|)."""
    diffs = np.abs(other.astype(np.int64) - exact.astype(np.int64))
    return {"candidates": len(exact), "mean_fp32_count": float(np.mean(exact)),
            "mean_abs_count_diff": float(np.mean(diffs)),
            "agreement": 1.0 - float(np.sum(diffs)) / max(1.0, float(np.sum(exact))),
            "same_best": bool(np.argmax(exact) == np.argmax(other))}


def gemm_blocked(query: torch.Tensor, cands: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> None:
    """Compute the same products in the tiled method's row blocks, on its worker threads."""
    q_t = query.T.contiguous().to(dtype)
    tiles = mnn.row_tiles(cands.shape[1], query.shape[0])
    order = iter(range(cands.shape[0]))
    workers = max(1, min(torch.get_num_threads(), cands.shape[0]))

    def work() -> None:
        torch.set_num_threads(1)
        block = torch.empty(max(b - a for a, b in tiles), query.shape[0], dtype=dtype)
        for n in order:
            c = cands[n].to(dtype)
            for a, b in tiles:
                torch.mm(c[a:b], q_t, out=block[: b - a])

    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers) as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--grid", type=int, default=61)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--filter", default="none", choices=["none", "ratio", "min_similarity"],
                        help="match filter of the re-ranking (the classical extractor: ratio)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time re-ranking and the blocked products in bf16, and compare "
                             "the bf16 MNN counts with the exact ones")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    lq = args.grid * args.grid
    query = rng.standard_normal((lq, args.dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=-1, keepdims=True)
    # candidates: noisy copies of the query (as real matches are), stored in fp16
    cands = query[None] + 0.5 * rng.standard_normal((args.k, lq, args.dim)).astype(np.float32)
    cands /= np.linalg.norm(cands, axis=-1, keepdims=True)
    cands = cands.astype(np.float16)
    q_t, c_t = torch.from_numpy(query), torch.from_numpy(cands)
    flop = 2.0 * args.k * lq * lq * args.dim
    runs = {
        "gemm_full": lambda: gemm_full(q_t, c_t),
        "gemm_blocked": lambda: gemm_blocked(q_t, c_t),
        "ours": lambda: mnn_scores(query, cands, match_filter=args.filter, ratio=0.9,
                                   min_similarity=0.5),
    }
    if args.bf16:  # re-ranking and the products alone in bf16 (this CPU's bf16 units)
        runs["ours_bf16"] = lambda: mnn_scores(query, cands, match_filter=args.filter,
                                               ratio=0.9, min_similarity=0.5, precision="bf16")
        runs["gemm_blocked_bf16"] = lambda: gemm_blocked(q_t, c_t, torch.bfloat16)
    # warm-up: BLAS threads, the tiling check, allocator
    gemm_full(q_t, c_t[:2])
    gemm_blocked(q_t, c_t[:2])
    mnn_scores(query, cands[:2], match_filter=args.filter)
    times: dict[str, list[float]] = {name: [] for name in runs}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    med = {name: statistics.median(t) for name, t in times.items()}
    gflops = {name: flop / s / 1e9 for name, s in med.items()}
    machine = max(gflops["gemm_full"], gflops["gemm_blocked"])
    bf16 = None
    if args.bf16:
        options = dict(match_filter=args.filter, ratio=0.9, min_similarity=0.5)
        exact = mnn_scores(query, cands, **options)
        bf16 = {"native": mnn.cpu_has_bf16(),
                "speedup_over_fp32_ours": gflops["ours_bf16"] / gflops["ours"],
                "speedup_over_fp32_blocked": gflops["gemm_blocked_bf16"] / gflops["gemm_blocked"],
                **count_agreement(exact, mnn_scores(query, cands, precision="bf16", **options))}
    ratio = gflops["ours"] / machine
    print(f"exact fp32 MNN vs fp32 GEMM, K={args.k}, {args.grid}x{args.grid}x{args.dim}, "
          f"filter {args.filter}, torch threads {torch.get_num_threads()}, "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'':>13} {'s (median)':>11} {'GFLOP/s':>8}")
    for name in runs:
        print(f"{name:>13} {med[name]:>11.3f} {gflops[name]:>8.1f}")
    print(f"exact ours / the faster GEMM: {100 * ratio:.1f} %")
    if bf16 is not None:
        print(f"bf16 ({'native' if bf16['native'] else 'emulated: no bf16 instructions'}): "
              f"re-ranking {bf16['speedup_over_fp32_ours']:.2f}x fp32, blocked products "
              f"{bf16['speedup_over_fp32_blocked']:.2f}x; MNN counts differ by "
              f"{bf16['mean_abs_count_diff']:.1f} of {bf16['mean_fp32_count']:.0f} on average "
              f"over {bf16['candidates']} candidates (agreement {100 * bf16['agreement']:.2f} %)")
    print(json.dumps({"bench": "mnn_gemm", "k": args.k, "grid": args.grid, "dim": args.dim,
                      "filter": args.filter, "threads": torch.get_num_threads(),
                      "gflop": flop / 1e9, "seconds": times, "gflops": gflops,
                      "ratio": ratio, "bf16": bf16, "load_avg": [min(loads), max(loads)]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
