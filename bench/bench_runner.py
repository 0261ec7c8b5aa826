"""End-to-end extraction latency of ``InferenceRunner``, eager vs CUDA graphs.

From a uint8 image in to features out, the two interleaved, with the largest output
difference between them.

    python bench/bench_runner.py --device cuda --precisions fp16 fp32 fp32-tf32 --batch 1 16

What the node pays per frame: upload of the uint8 image, normalise + resize on the device, the
forward, the copy of the features back to the host. Random weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.model import InferenceRunner, SelaVPR, SelaVPRConfig  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="vitl14")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--precisions", nargs="+", default=["fp16", "fp32", "fp32-tf32"])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--image", type=int, nargs=2, default=[480, 640], help="H W")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone=args.backbone, depth=args.depth)).eval()
    rng = np.random.default_rng(0)
    rows = []
    for name in args.precisions:
        precision, tf32 = name.split("-")[0], name.endswith("-tf32")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        runners = {
            "eager": InferenceRunner(model, device, precision, 16, cuda_graphs=False, tf32=tf32),
            "graph": InferenceRunner(model, device, precision, 16, cuda_graphs=True, tf32=tf32),
        }
        for batch in args.batch:
            images = [rng.integers(0, 256, (*args.image, 3), dtype=np.uint8)
                      for _ in range(batch)]
            outs = {k: r.extract(images) for k, r in runners.items()}  # warm-up + capture
            for _ in range(2):
                for r in runners.values():
                    r.extract(images)
            times: dict[str, list[float]] = {k: [] for k in runners}
            for _ in range(args.iters):
                for k, r in runners.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    start = time.perf_counter()
                    r.extract(images)  # returns CPU tensors: synchronised
                    times[k].append(time.perf_counter() - start)
            diff = max(float((outs["graph"][i] - outs["eager"][i]).abs().max()) for i in (0, 1))
            graphs = runners["graph"]._graphs
            row = {"precision": name, "batch": batch,
                   "eager_ms_per_img": 1e3 * statistics.median(times["eager"]) / batch,
                   "graph_ms_per_img": 1e3 * statistics.median(times["graph"]) / batch,
                   "graph_p95_ms": 1e3 * float(np.percentile(times["graph"], 95)),
                   "max_abs_diff": diff,
                   "graph_failed": bool(graphs and graphs.failed)}
            row["speedup"] = row["eager_ms_per_img"] / row["graph_ms_per_img"]
            rows.append(row)
            print(f"{name:>10} batch {batch:>3}: eager {row['eager_ms_per_img']:.2f} ms/img, "
                  f"graph {row['graph_ms_per_img']:.2f} ms/img ({row['speedup']:.2f}x), "
                  f"max |graph - eager| {diff:.2e}", flush=True)
        del runners
    torch.backends.cuda.matmul.allow_tf32 = False
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(json.dumps({"bench": "runner", "device": args.device, "gpu": gpu,
                      "backbone": args.backbone, "image_hw": args.image, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
