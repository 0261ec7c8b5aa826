"""Feature-extraction throughput and peak memory of SelaVPR, ours vs the plain reference forward.

    python bench/bench_model.py                              # ViT-L 224, CPU fp32, batch 1 and 8
    python bench/bench_model.py --device cuda --precision fp16 --iters 20 --warmup 5

Random weights (speed does not depend on them); the reference forward (bench/reference_model.py,
naive attention, pos-embed re-interpolated every call) shares our weights tensors, so memory is
not doubled. Prints a table, then one JSON line. Needs only torch + numpy (+ this repo).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from reference_model import ReferenceSelaVPR  # noqa: E402
from selavpr_ros.model import SelaVPR, SelaVPRConfig  # noqa: E402
from selavpr_ros.model.inference import PRECISIONS  # noqa: E402


def _rss_peak_mib() -> float | None:
    """Peak resident memory (VmHWM) of this process, Linux only."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_rss_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(
    forward: Callable[[torch.Tensor], object], x: torch.Tensor, device: torch.device
) -> tuple[float, float | None]:
    """One timed forward -> (seconds, peak memory MiB during it)."""
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _reset_rss_peak()
    start = time.perf_counter()
    forward(x)
    _sync(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        return elapsed, torch.cuda.max_memory_allocated(device) / 2**20
    return elapsed, _rss_peak_mib()


def measure(
    impls: dict[str, Callable[[torch.Tensor], object]],
    x: torch.Tensor,
    device: torch.device,
    precision: str,
    warmup: int,
    iters: int,
) -> list[dict[str, float | int | str | None]]:
    """Time the implementations interleaved (A B A B ...).

    Interleaving makes load from other processes hit both alike; throughput uses the median
    time per batch.
    """
    dtype = PRECISIONS[precision]
    times: dict[str, list[float]] = {name: [] for name in impls}
    peaks: dict[str, list[float]] = {name: [] for name in impls}
    with torch.inference_mode(), torch.autocast(
        device.type, dtype=dtype, enabled=dtype is not None
    ):
        for forward in impls.values():
            for _ in range(warmup):
                forward(x)
        for _ in range(iters):
            for name, forward in impls.items():
                elapsed, peak = time_once(forward, x, device)
                times[name].append(elapsed)
                if peak is not None:
                    peaks[name].append(peak)
    rows = []
    for name in impls:
        median = statistics.median(times[name])
        rows.append(
            {
                "impl": name,
                "batch": int(x.shape[0]),
                "images_per_s": x.shape[0] / median,
                "ms_per_batch": 1000 * median,
                "ms_min": 1000 * min(times[name]),
                "peak_mib": max(peaks[name]) if peaks[name] else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--iters", type=int, default=3, help="timed forwards per implementation and batch size"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--backbone", default="vitl14")
    parser.add_argument("--depth", type=int, default=None, help="fewer blocks (quick runs)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the reference forward"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.precision == "fp16" and args.device == "cpu":
        parser.error("--precision fp16 needs --device cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = SelaVPRConfig(backbone=args.backbone, depth=args.depth, image_size=args.image_size)
    torch.manual_seed(0)
    ours = SelaVPR(cfg, init_weights=False).eval()  # default torch init: speed is the same
    ours.to(device)
    impls: dict[str, Callable[[torch.Tensor], object]] = {"ours": ours}
    if not args.no_reference:
        with torch.device("meta"):
            ref = ReferenceSelaVPR(args.backbone, args.depth, False)
        ref.load_state_dict(ours.state_dict(), strict=True, assign=True)  # shares tensors
        impls["reference"] = ref.eval()

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(
        f"SelaVPR {args.backbone} depth {cfg.num_layers} {args.image_size}px | {args.device} "
        f"{args.precision} | torch {torch.__version__} | threads {torch.get_num_threads()}"
        + (f" | {gpu}" if gpu else f" | {platform.processor() or platform.machine()}")
    )
    header = f"{'impl':<10} {'batch':>5} {'img/s':>9} {'ms/batch':>10} {'peak MiB':>10}"
    print(header + "   (median of --iters)")
    print("-" * len(header))
    results = []
    for batch in args.batch:
        x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
        for row in measure(impls, x, device, args.precision, args.warmup, args.iters):
            results.append(row)
            peak = f"{row['peak_mib']:.0f}" if row["peak_mib"] is not None else "n/a"
            print(
                f"{row['impl']:<10} {batch:>5} {row['images_per_s']:>9.2f} "
                f"{row['ms_per_batch']:>10.1f} {peak:>10}"
            )
    ratios = {}
    for batch in args.batch:
        speed = {r["impl"]: r["images_per_s"] for r in results if r["batch"] == batch}
        if "reference" in speed:
            ratios[str(batch)] = speed["ours"] / speed["reference"]
            print(f"batch {batch}: ours / reference throughput = {ratios[str(batch)]:.2f}x")
    peak_kind = "cuda max_memory_allocated" if device.type == "cuda" else "process VmHWM (RSS)"
    print(
        json.dumps(
            {
                "bench": "model_extraction",
                "backbone": args.backbone,
                "depth": cfg.num_layers,
                "image_size": args.image_size,
                "device": args.device,
                "device_name": gpu,
                "precision": args.precision,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "iters": args.iters,
                "warmup": args.warmup,
                "peak_memory": peak_kind,
                "results": results,
                "ours_over_reference": ratios,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
