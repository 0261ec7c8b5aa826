"""Benchmark (CUDA only): the fused Triton MNN kernel against the unfused chunked fp16 method.

    python bench/bench_mnn_fused.py --k 100 --grid 61 --dim 128 --repeats 20

Both run ``mnn_scores``/``mnn_matches`` at fp16 on the same random unit features already on
the GPU (as the localizer's device cache holds them), interleaved, timed with a device
synchronise (so the time includes the counts' copy back, as the localizer sees it). Unfused is
``method="chunked"`` with the automatic memory budget (one chunk at K=100 on an 80 GB GPU: the
(K, L, L) fp16 similarities are written and read back); fused is ``method="fused"``. Rows:
fp16 candidates (counts; counts and pairs) and int8 candidates with per-feature scales and
masks (a map's compact format). The first fused call compiles and autotunes the kernel: its
time is reported on its own. Counts are compared (identical expected, except where the two
products' fp32 sums round to different fp16 values: the mismatching candidates are counted).
A correctness check comes first, as in test/test_matching_fused.py (for a machine without
pytest): small-integer features (exact in fp16 and fp32, many ties), int8 with power-of-two
scales and masks, fused vs chunked fp16 vs the exact CPU fp32 path, pairs included.
Imports only numpy, torch, triton and selavpr_ros.matching (no faiss, no rclpy).
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.matching import (  # noqa: E402
    fused_triton,  # noqa: E402
    mnn_matches,
    mnn_scores,
)

TARGET_MS = 2.0  # issue 17: re-rank K=100 on an H100/H200 at fp16


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) * 1e3


def _features(k: int, lq: int, dim: int, device: torch.device) -> dict[str, Any]:
    gen = torch.Generator(device=device).manual_seed(0)
    query = torch.randn(lq, dim, device=device, generator=gen)
    query /= query.norm(dim=-1, keepdim=True)
    cands = torch.randn(k, lq, dim, device=device, generator=gen)
    cands /= cands.norm(dim=-1, keepdim=True)
    scale = cands.abs().amax(dim=-1) / 127.0  # per-feature int8 codes, as a compact map
    codes = torch.round(cands / scale[..., None]).to(torch.int8)
    valid = torch.rand(k, lq, device=device, generator=gen) > 0.05
    query_valid = torch.rand(lq, device=device, generator=gen) > 0.05
    return {"query": query, "fp16": cands.half(), "int8": codes, "scale": scale,
            "candidate_mask": valid, "query_mask": query_valid}


def integer_check(k: int, grid: int, dim: int) -> dict[str, Any]:
    """Fused vs chunked fp16 vs exact CPU fp32 on features where every product is exact."""
    rng = np.random.default_rng(11)
    query = torch.from_numpy(rng.integers(-2, 3, (grid, grid, dim)).astype(np.float32))
    cands = torch.from_numpy(rng.integers(-3, 4, (k, grid, grid, dim)).astype(np.int8))
    options = {
        "query_mask": torch.from_numpy(rng.random((grid, grid)) > 0.1),
        "candidate_mask": torch.from_numpy(rng.random((k, grid, grid)) > 0.1),
        "candidate_scale": torch.from_numpy(
            (2.0 ** rng.integers(-2, 2, (k, grid, grid))).astype(np.float32))}
    on_gpu = {name: t.cuda() for name, t in options.items()}
    fused = mnn_matches(query.cuda(), cands.cuda(), precision="fp16", method="fused", **on_gpu)
    chunked = mnn_matches(query.cuda(), cands.cuda(), precision="fp16", method="chunked",
                          **on_gpu)
    exact = mnn_matches(query, cands.float(), method="chunked", **options)

    def same(a: Any, b: Any) -> bool:
        return all(np.array_equal(getattr(a, f), getattr(b, f))
                   for f in ("counts", "nearest", "mutual", "similarity"))

    return {"k": k, "fused_equals_chunked_fp16": same(fused, chunked),
            "fused_equals_exact_cpu": same(fused, exact), "counts": fused.counts.tolist()}


def _row(name: str, keep_pairs: bool, query: torch.Tensor, cands: torch.Tensor,
         options: dict[str, Any], repeats: int) -> dict[str, Any]:
    call = mnn_matches if keep_pairs else mnn_scores

    def run(method: str) -> Any:
        return call(query, cands, precision="fp16", method=method, memory_budget=None,
                    **options)

    first, first_ms = _timed(lambda: run("fused"))  # compile + autotune on the first row
    run("chunked")  # warm-up (cuBLAS handles, allocator)
    fused_ms, unfused_ms = [], []
    fused = unfused = first
    for _ in range(repeats):  # interleaved
        fused, t = _timed(lambda: run("fused"))
        fused_ms.append(t)
        unfused, t = _timed(lambda: run("chunked"))
        unfused_ms.append(t)
    fc = fused.counts if keep_pairs else fused
    uc = unfused.counts if keep_pairs else unfused
    row = {"case": name, "pairs": keep_pairs, "first_call_ms": first_ms,
           "fused_ms": statistics.median(fused_ms), "fused_min_ms": min(fused_ms),
           "unfused_ms": statistics.median(unfused_ms), "unfused_min_ms": min(unfused_ms),
           "counts_identical": bool(np.array_equal(fc, uc)),
           "candidates_differing": int((fc != uc).sum()),
           "max_count_diff": int(np.abs(fc - uc).max()), "mean_count": float(uc.mean())}
    if keep_pairs:
        row["pairs_identical"] = bool(np.array_equal(fused.mutual, unfused.mutual)
                                      and np.array_equal(fused.nearest[fused.mutual],
                                                         unfused.nearest[unfused.mutual]))
    row["speedup"] = row["unfused_ms"] / row["fused_ms"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--grid", type=int, default=61, help="local features: grid x grid")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    base = {"bench": "mnn_fused", "k": args.k, "grid": args.grid, "dim": args.dim,
            "target_ms": TARGET_MS}
    if not torch.cuda.is_available():
        print(json.dumps({**base, "skipped": "needs a CUDA GPU"}))
        return 0
    if not fused_triton.triton_available():
        print(json.dumps({**base, "skipped": "triton does not import"}))
        return 0
    import triton

    device = torch.device("cuda")
    check = integer_check(5, args.grid, args.dim)
    print(f"integer check (exact products): {check}")
    f = _features(args.k, args.grid * args.grid, args.dim, device)
    masks = {"query_mask": f["query_mask"], "candidate_mask": f["candidate_mask"]}
    rows = [
        _row("fp16", False, f["query"], f["fp16"], {}, args.repeats),
        _row("fp16", True, f["query"], f["fp16"], {}, args.repeats),
        _row("int8+scale+masks", False, f["query"], f["int8"],
             {"candidate_scale": f["scale"], **masks}, args.repeats),
    ]
    best = fused_triton.autotuned_config()
    print(f"MNN fused vs unfused, K={args.k}, {args.grid}x{args.grid}x{args.dim}, fp16, "
          f"{torch.cuda.get_device_name(device)}, triton {triton.__version__}")
    print(f"{'case':>17} {'pairs':>5} {'fused ms':>9} {'unfused ms':>10} {'speed-up':>8} "
          f"{'identical':>9} {'first ms':>9}")
    for r in rows:
        print(f"{r['case']:>17} {str(r['pairs']):>5} {r['fused_ms']:>9.3f} "
              f"{r['unfused_ms']:>10.3f} {r['speedup']:>8.2f} {str(r['counts_identical']):>9} "
              f"{r['first_call_ms']:>9.0f}")
    print(json.dumps({**base, "device": torch.cuda.get_device_name(device),
                      "torch": torch.__version__, "triton": triton.__version__,
                      "best_config": best, "integer_check": check, "repeats": args.repeats,
                      "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
