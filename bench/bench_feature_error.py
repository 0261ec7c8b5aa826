"""Feature error of reduced-precision extraction (bf16/fp16 autocast) against fp32, same weights.

Run from the repository root: ``python bench/bench_feature_error.py [--device cuda]``.
Random weights (default torch init, ViT-L/14 at 224), a few random images: this measures the
numerical effect of the precision, not recognition quality. Reports, per precision, the worst
cosine similarity of global descriptors and of local features to fp32, and the largest
absolute local-feature difference. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selavpr_ros.model import SelaVPR, SelaVPRConfig  # noqa: E402
from selavpr_ros.model.inference import PRECISIONS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="vitl14")
    parser.add_argument("--images", type=int, default=2)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = SelaVPR(SelaVPRConfig(backbone=args.backbone), init_weights=False).eval().to(device)
    x = torch.randn(args.images, 3, 224, 224, device=device)
    precisions = ["bf16"] + (["fp16"] if device.type == "cuda" else [])
    with torch.inference_mode():
        local32, glob32 = model(x)
        rows = []
        for name in precisions:
            with torch.autocast(device.type, dtype=PRECISIONS[name]):
                local, glob = model(x)
            local, glob = local.float(), glob.float()
            cos_g = torch.nn.functional.cosine_similarity(glob, glob32, dim=-1)
            cos_l = torch.nn.functional.cosine_similarity(local, local32, dim=1)
            rows.append({"precision": name, "global_cos_min": float(cos_g.min()),
                         "local_cos_min": float(cos_l.min()),
                         "local_cos_mean": float(cos_l.mean()),
                         "local_max_abs": float((local - local32).abs().max())})
    print(json.dumps({"bench": "feature_error", "device": args.device,
                      "backbone": args.backbone, "weights": "random", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
