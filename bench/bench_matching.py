"""Benchmark: MNN re-ranking time and peak memory, chunked (ours) vs the unchunked reference.

Run from the repository root: ``python bench/bench_matching.py [--device cuda] [--k 10 20 100]``.
Ours is ``mnn_scores`` with its default method (tiled on the CPU, chunked on CUDA; ``chunk``
is only used by the chunked method).
Features are random unit vectors of SelaVPR's shape (61x61x128): the query in float32 and the
candidates in float16, as they come out of a place map. Both implementations run in the same
process on the same features; the counts must be identical (fp32). Peak memory is the growth
of the process's peak resident set (CPU: VmHWM after resetting it through
/proc/self/clear_refs) or of torch.cuda.max_memory_allocated (GPU) during one call.
Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reference_mnn import reference_mnn_scores  # noqa: E402
from selavpr_ros.matching import chunk_size_for_budget, mnn_scores  # noqa: E402

MiB = 2**20


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_cpu_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def measure(fn: Callable[[], np.ndarray], device: torch.device, repeats: int
            ) -> tuple[np.ndarray, float, float]:
    """Run ``fn``: (result, median seconds, peak extra memory in MiB)."""
    times = []
    peak = 0.0
    result = None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        else:
            _reset_cpu_peak()
            base = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        if device.type == "cuda":
            used = torch.cuda.max_memory_allocated(device) - base
        else:
            used = _status_kib("VmHWM") * 1024 - base
        peak = max(peak, used / MiB)
    return result, statistics.median(times), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 100])
    parser.add_argument(
        "--reference-k", type=int, nargs="*", default=None,
        help="K values to also run the unchunked reference at (default: all on CUDA, K<=20 on "
             "CPU, where K=100 needs 5.5 GB and tens of seconds)")
    parser.add_argument("--memory-mb", type=float, default=256.0, help="our working-memory budget")
    parser.add_argument("--grid", type=int, default=61)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    ref_ks = args.reference_k
    if ref_ks is None:
        ref_ks = args.k if device.type == "cuda" else [k for k in args.k if k <= 20]
    budget = int(args.memory_mb * MiB)

    rng = np.random.default_rng(0)
    grid, dim = args.grid, args.dim
    query = rng.standard_normal((grid, grid, dim)).astype(np.float32)
    query /= np.linalg.norm(query, axis=-1, keepdims=True)
    all_cands = rng.standard_normal((max(args.k), grid, grid, dim)).astype(np.float32)
    all_cands /= np.linalg.norm(all_cands, axis=-1, keepdims=True)
    all_cands = all_cands.astype(np.float16)
    lq = grid * grid

    # warm-up (kernels, allocator, BLAS threads)
    mnn_scores(query, all_cands[:2], device=device, precision=args.precision)
    reference_mnn_scores(query, all_cands[:1], device=args.device)

    rows = []
    for k in args.k:
        cands = all_cands[:k]
        chunk = chunk_size_for_budget(lq, lq, dim, budget, 2 if args.precision == "fp16" else 4)
        ours, t_ours, m_ours = measure(
            lambda c=cands: mnn_scores(query, c, device=device, precision=args.precision,
                                       memory_budget=budget),
            device, args.repeats)
        row = {"k": k, "chunk": min(chunk, k), "ours_s": t_ours, "ours_mib": m_ours,
               "ref_s": None, "ref_mib": None, "time_ratio": None, "memory_ratio": None,
               "counts_equal": None, "max_count_diff": None}
        if k in ref_ks:
            ref, t_ref, m_ref = measure(
                lambda c=cands: reference_mnn_scores(query, c, device=args.device),
                device, args.repeats)
            row.update(ref_s=t_ref, ref_mib=m_ref, time_ratio=t_ours / t_ref,
                       memory_ratio=m_ours / m_ref if m_ref > 0 else None,
                       counts_equal=bool(np.array_equal(ours, ref)),
                       max_count_diff=int(np.abs(ours - ref).max()))
        rows.append(row)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"MNN re-ranking, {grid}x{grid}x{dim} features, device {name}, {args.precision}, "
          f"budget {args.memory_mb:.0f} MiB, torch threads {torch.get_num_threads()}")
    print(f"{'K':>4} {'chunk':>5} {'ours s':>8} {'ours MiB':>9} {'ref s':>8} {'ref MiB':>9} "
          f"{'t ratio':>8} {'mem ratio':>9} {'equal':>6}")

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    for r in rows:
        print(f"{r['k']:>4} {r['chunk']:>5} {r['ours_s']:>8.3f} {r['ours_mib']:>9.1f} "
              f"{fmt(r['ref_s'], '8.3f'):>8} {fmt(r['ref_mib'], '9.1f'):>9} "
              f"{fmt(r['time_ratio'], '8.2f'):>8} {fmt(r['memory_ratio'], '9.3f'):>9} "
              f"{str(r['counts_equal']) if r['counts_equal'] is not None else '-':>6}")
    print(json.dumps({"bench": "matching", "device": name, "precision": args.precision,
                      "grid": grid, "dim": dim, "memory_budget_mib": args.memory_mb,
                      "threads": torch.get_num_threads(), "rows": rows}))
    if args.precision == "fp32" and any(r["counts_equal"] is False for r in rows):
        print("ERROR: counts differ from the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
