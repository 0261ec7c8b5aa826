"""Per-stage latency of the ROS-free query pipeline (what the node runs per frame, without DDS).

A map is built from a synthetic route (traversal 1) with a SelaVPR model of the chosen size,
then traversal 2's frames are queried one by one through :class:`Localizer`: decode-free
extract, global search, fetching the candidates' local features, MNN re-ranking, decision.
The weights are random (no trained weights here): timings are real, recognition is not.

    python bench/bench_localizer.py --device cuda --precision fp16 --places 300 --queries 50
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.extractors.selavpr import SelaVPRExtractor  # noqa: E402
from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402
from selavpr_ros.model import SelaVPR, SelaVPRConfig  # noqa: E402
from selavpr_ros.synthetic import RouteConfig, render_route  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--backbone", default="vitl14")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--places", type=int, default=120)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--rerank-k", type=int, default=None)
    args = parser.parse_args()

    t0 = time.perf_counter()
    frames = render_route(RouteConfig(seed=3, frames=args.places))
    render_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone=args.backbone, depth=args.depth)).eval()
    extractor = SelaVPRExtractor(model, device=args.device, precision=args.precision,
                                 batch_size=16)
    rerank_precision = "fp16" if args.precision == "fp16" else "fp32"
    config = LocalizerConfig(top_k=min(args.top_k, args.places), rerank_k=args.rerank_k,
                             device=args.device, precision=rerank_precision,
                             rerank_memory_mb=2048 if args.device.startswith("cuda") else 256)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with PlaceMap.create(Path(tmp) / "bench.selavpr", extractor) as place_map:
            mapped = frames[0]
            for start in range(0, len(mapped), 64):
                batch = mapped[start:start + 64]
                place_map.append(extractor.extract([f.image for f in batch]), [
                    PlaceInfo(stamp_ns=f.stamp_ns, position=f.position,
                              orientation=f.orientation, source="synthetic")
                    for f in batch])
        build_s = time.perf_counter() - t0
        with PlaceMap.open(Path(tmp) / "bench.selavpr") as place_map:
            localizer = Localizer(place_map, extractor, config)
            queries = frames[1][: args.queries]
            for frame in queries[:3]:  # warm-up: kernels, caches, lazy loads
                localizer.query(frame.image)
            stages: dict[str, list[float]] = {}
            for frame in queries:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                result = localizer.query(frame.image)
                for name, ms in result.stages:
                    stages.setdefault(name, []).append(ms)
                stages.setdefault("total", []).append(result.total_ms)
    summary = {name: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
               for name, v in stages.items()}
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none"
    print(f"{args.backbone} {args.precision} on {args.device} ({gpu}); {args.places} places, "
          f"top_k {config.top_k}, rerank_k {config.rerank_depth(None)}; random weights")
    print(f"render {render_s:.1f} s, map build {build_s:.1f} s")
    print(f"{'stage':<10}{'p50 ms':>10}{'p95 ms':>10}")
    for name, s in summary.items():
        print(f"{name:<10}{s['p50']:>10.2f}{s['p95']:>10.2f}")
    print(json.dumps({"bench": "localizer", "device": args.device, "gpu": gpu,
                      "precision": args.precision, "backbone": args.backbone,
                      "places": args.places, "top_k": config.top_k,
                      "rerank_k": config.rerank_depth(None), "stages_ms": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
