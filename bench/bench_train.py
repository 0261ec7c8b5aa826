"""``selavpr train`` on the synthetic world: validation Recall@1 before vs after training.

    python bench/bench_train.py                       # 23 min on a 2-core CPU at load ~9
    python bench/bench_train.py --device cuda --gpu-throughput   # + ViT-L/14 step throughput

The backbone is a RANDOM ViT-S (4 blocks, 112 px): NOT pretrained. Only the adapters, GeM p and
LocalAdapt learn (the published split), so the figures show that the training loop learns,
not what SelaVPR reaches from DINOv2 weights. Route: drives 0 (day, 2 m right of centre) and 1
(afternoon, centre) train; drive 2 (overcast, 3 m left of drive 0) is localised against drive 0
through the same Localizer code the node runs. Prints a markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from selavpr_ros.cli import main as cli_main  # noqa: E402
from selavpr_ros.synthetic import RouteConfig, Traversal, write_route  # noqa: E402

TRAVERSALS = (
    Traversal(lateral_m=-2.0, lighting="day", phase_m=0.0, yaw_sway_deg=3.0),
    Traversal(lateral_m=0.0, lighting="afternoon", phase_m=0.5, yaw_sway_deg=4.0),
    Traversal(lateral_m=1.0, lighting="overcast", phase_m=0.75, yaw_sway_deg=4.0),
)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def gpu_throughput(device: str, precision: str, steps: int) -> dict[str, float]:
    """ViT-L/14 training steps at the published batch shape (4 queries x (1 + 1 + 2) images)."""
    import numpy as np
    import torch

    from selavpr_ros.model import SelaVPR, SelaVPRConfig
    from selavpr_ros.train.losses import triplet_losses
    from selavpr_ros.train.params import freeze_for_training

    model = SelaVPR(SelaVPRConfig()).to(device)
    opt = torch.optim.Adam(freeze_for_training(model), lr=1e-5)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    x = torch.randn(16, 3, 224, 224, device=device)
    times = []
    torch.cuda.reset_peak_memory_stats()
    for i in range(steps + 2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            local, glob = model(x)
        g, loc = triplet_losses(local, glob, 2, 0.1)
        opt.zero_grad()
        scaler.scale(g + loc).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    return {"step_s": step_s, "images_per_s": 16 / step_s,
            "peak_mib": torch.cuda.max_memory_allocated() / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench_results/train", help="work directory")
    parser.add_argument("--frames", type=int, default=100, help="frames per drive")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="1e-3: the published 1e-5 barely moves a random backbone's adapters")
    parser.add_argument("--rerank-k", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-throughput", action="store_true")
    parser.add_argument("--precision", default="bf16", help="GPU throughput precision")
    args = parser.parse_args()

    out = Path(args.out) / time.strftime("%Y%m%dT%H%M%S")
    route = out / "route"
    write_route(RouteConfig(seed=0, frames=args.frames, traversals=TRAVERSALS), route)
    drives = []
    for i in range(3):
        folder = route / f"traversal_{i}"
        drives += ["--images", str(folder), "--poses", str(folder / "poses.csv")]
    argv = ["train", str(out / "run"), "--random-init", "--backbone", "vits14", "--depth", "4",
            "--image-size", "112", *drives, "--val", "2", "--epochs", str(args.epochs),
            "--queries-per-epoch", str(2 * args.frames), "--cache-refresh", str(2 * args.frames),
            "--negatives-sample", str(2 * args.frames), "--lr", str(args.lr),
            "--val-radius", "5", "--rerank-k", str(args.rerank_k), "--device", args.device,
            "--no-progress", "--json"]
    load_before = load()
    start = time.monotonic()
    status = cli_main(argv)
    minutes = (time.monotonic() - start) / 60
    if status:
        return status
    log_text = (out / "run" / "train_log.jsonl").read_text()
    history = [json.loads(line) for line in log_text.splitlines()]
    before = history[0]["val"]
    best_epoch = max(history, key=lambda r: (r["val"]["reranked"]["5"], -r["epoch"]))["epoch"]
    after = next(r["val"] for r in history if r["epoch"] == best_epoch)
    result = {"minutes": minutes, "epochs": len(history) - 1, "best_epoch": best_epoch,
              "lr": args.lr, "rerank_k": args.rerank_k, "before": before, "after": after,
              "load_before": load_before, "load_after": load(), "cpus": os.cpu_count()}
    print("\n| stage | R@1 before | R@1 after | gain (points) | R@5 before | R@5 after |")
    print("|---|---|---|---|---|---|")
    for stage in ("global", "reranked"):
        b, a = before[stage], after[stage]
        print(f"| {stage} | {100 * b['1']:.1f} % | {100 * a['1']:.1f} % | "
              f"{100 * (a['1'] - b['1']):+.1f} | {100 * b['5']:.1f} % | {100 * a['5']:.1f} % |")
    print(f"\n{minutes:.1f} min, {result['epochs']} epochs (best {best_epoch}); "
          f"load: {load_before} -> {result['load_after']}")
    if args.gpu_throughput:
        result["gpu"] = gpu_throughput(args.device, args.precision, 10)
        gpu = result["gpu"]
        print(f"ViT-L/14 training, batch 4x(1+1+2), {args.precision}: "
              f"{gpu['images_per_s']:.1f} img/s, peak {gpu['peak_mib']:.0f} MiB")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
