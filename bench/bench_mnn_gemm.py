"""Benchmark: exact fp32 MNN re-ranking against this machine's own fp32 GEMM, same shapes.

Run from the repository root: ``python bench/bench_mnn_gemm.py [--k 100] [--grid 61]``.
Re-ranking K candidates is K products of (L, C) x (C, L) (L = grid^2, C = 128) plus the
arg-maxima; its arithmetic is 2 K L^2 C flop. The machine's GEMM throughput is measured on the
same products: ``torch.mm`` of each candidate's (L, C) features (fp32) with the query's (C, L)
into one reused (L, L) output, with torch's default threads, so it is what the BLAS library
gives for these shapes and nothing else. Ours is ``mnn_scores`` (fp32, its default method:
tiled on the CPU), same features (query fp32, candidates fp16 as stored in a map). The two are
timed interleaved, ``--repeats`` times each, and the ratio of their median GFLOP/s is printed
with the load average (other processes on a shared machine slow both alike, not equally).
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selavpr_ros.matching import mnn_scores  # noqa: E402


def gemm(query: torch.Tensor, cands: torch.Tensor, out: torch.Tensor) -> None:
    """The same products as re-ranking, written into one reused (L, L) matrix."""
    q_t = query.T.contiguous()
    for n in range(cands.shape[0]):
        torch.mm(cands[n].float(), q_t, out=out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--grid", type=int, default=61)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--filter", default="none", choices=["none", "ratio", "min_similarity"],
                        help="match filter of the re-ranking (the classical extractor: ratio)")
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
    out = torch.empty(lq, lq)
    flop = 2.0 * args.k * lq * lq * args.dim

    def ours() -> np.ndarray:
        return mnn_scores(query, cands, match_filter=args.filter, ratio=0.9,
                          min_similarity=0.5)

    # warm-up: BLAS threads, the tiling check, allocator
    gemm(q_t, c_t[:2], out)
    mnn_scores(query, cands[:2], match_filter=args.filter)
    times: dict[str, list[float]] = {"gemm": [], "ours": []}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        start = time.perf_counter()
        gemm(q_t, c_t, out)
        times["gemm"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours()
        times["ours"].append(time.perf_counter() - start)
        loads.append(os.getloadavg()[0])
    med = {name: statistics.median(t) for name, t in times.items()}
    gflops = {name: flop / s / 1e9 for name, s in med.items()}
    ratio = gflops["ours"] / gflops["gemm"]
    print(f"exact fp32 MNN vs fp32 GEMM, K={args.k}, {args.grid}x{args.grid}x{args.dim}, "
          f"filter {args.filter}, torch threads {torch.get_num_threads()}, "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'':>6} {'s (median)':>11} {'GFLOP/s':>8}")
    for name in ("gemm", "ours"):
        print(f"{name:>6} {med[name]:>11.3f} {gflops[name]:>8.1f}")
    print(f"ours / GEMM throughput: {100 * ratio:.1f} %")
    print(json.dumps({"bench": "mnn_gemm", "k": args.k, "grid": args.grid, "dim": args.dim,
                      "filter": args.filter, "threads": torch.get_num_threads(),
                      "gflop": flop / 1e9, "gemm_s": times["gemm"], "ours_s": times["ours"],
                      "gemm_gflops": gflops["gemm"], "ours_gflops": gflops["ours"],
                      "ratio": ratio, "load_avg": [min(loads), max(loads)]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
