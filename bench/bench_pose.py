"""Query camera pose on the synthetic street: PnP (with depth), two-view, keyframe baseline.

The map is traversal 0 of a synthetic route (day), the queries traversal 1 (afternoon light,
3 m to the side, frames between the map's); features come from the weights-free classical
extractor; each query is retrieved as the localizer does (global top-k, MNN re-ranking), and
every query with a retrieved place counts as accepted. Errors are against the exact poses;
times are per frame: the observations from the re-ranking's MNN pairs (with sub-grid
refinement) and the estimator alone.

    python bench/bench_pose.py --frames 60 --width 320
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.synthetic import Camera, RouteConfig  # noqa: E402
from selavpr_ros.synthetic.pose_scene import (  # noqa: E402
    FrameResult,
    PoseSceneConfig,
    build_pose_scene,
    evaluate_query,
    retrieve,
)

# row label -> (estimator mode, two-view method)
ROWS = {"pnp": ("pnp", "triangulate"), "two_view": ("two_view", "triangulate"),
        "two_view (essential)": ("two_view", "essential"), "keyframe": ("keyframe", "")}
TARGETS = {"pnp": (0.25, 1.5), "two_view": (1.0, 3.0), "two_view (essential)": (1.0, 3.0)}
TIME_TARGET_MS = 10.0


def summarise(results: list[FrameResult]) -> dict[str, object]:
    t = np.array([r.translation_error_m for r in results])
    r = np.array([r.rotation_error_deg for r in results])
    sources: dict[str, int] = {}
    for res in results:
        sources[res.estimate.source] = sources.get(res.estimate.source, 0) + 1
    return {
        "frames": len(results),
        "sources": sources,
        "t_median_m": float(np.nanmedian(t)), "t_p90_m": float(np.nanpercentile(t, 90)),
        "r_median_deg": float(np.nanmedian(r)), "r_p90_deg": float(np.nanpercentile(r, 90)),
        "estimate_ms_median": 1000 * float(np.median([x.estimate_s for x in results])),
        "estimate_ms_p90": 1000 * float(np.percentile([x.estimate_s for x in results], 90)),
        "estimate_cpu_ms_median": 1000 * float(np.median([x.estimate_cpu_s for x in results])),
        "pairs_ms_median": 1000 * float(np.median([x.pairs_s for x in results])),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--places", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (MNN pairs)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    route = RouteConfig(seed=args.seed, frames=args.frames, spacing_m=2.0,
                        camera=Camera(width=args.width, height=args.width * 3 // 4))
    config = PoseSceneConfig(route=route, places=args.places)
    config = replace(config, extractor=replace(config.extractor, long_side=args.width))
    lateral = [t.lateral_m for t in route.traversals]
    load_before = os.getloadavg()
    start = time.perf_counter()
    scene = build_pose_scene(config, progress=True)
    build_s = time.perf_counter() - start
    queries = range(2, args.frames - 2)  # both ends see past the map's first/last frame
    retrieved = {i: retrieve(scene, i) for i in tqdm(queries, desc="retrieval")}
    results: dict[str, list[FrameResult]] = {m: [] for m in ROWS}
    base = scene.config
    for i in tqdm(queries, desc="poses"):
        for row, (mode, method) in ROWS.items():
            if method:
                scene.config = replace(base, pose=replace(base.pose, two_view_method=method))
            results[row].append(evaluate_query(scene, i, mode, retrieved[i]))  # type: ignore[arg-type]
            scene.config = base
    summary = {m: summarise(results[m]) for m in ROWS}
    retrieval = [r.retrieval_error_m for r in results["keyframe"]]
    report = {
        "config": {"frames": args.frames, "width": args.width, "seed": args.seed,
                   "places": args.places, "lateral_offset_m": lateral[1] - lateral[0],
                   "query_lighting": route.traversals[1].lighting,
                   "local_features": scene.info.local_count},
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "build_s": build_s,
        "retrieval_error_m_median": float(np.median(retrieval)),
        "results": summary,
    }
    print(json.dumps(report, indent=2))
    print()
    print("| source | frames (used) | t median / p90 (m) | rot median / p90 (deg) | "
          "estimate ms median / p90 (CPU ms median) | target | met |")
    print("|---|---|---|---|---|---|---|")
    for mode in ROWS:
        s = summary[mode]
        target = TARGETS.get(mode)
        met = "" if target is None else (
            "yes" if s["t_median_m"] <= target[0] and s["r_median_deg"] <= target[1]  # type: ignore[operator]
            else "no")
        target_text = "baseline" if target is None else f"<= {target[0]} m, <= {target[1]} deg"
        print(f"| {mode} | {s['frames']} ({s['sources']}) | {s['t_median_m']:.3f} / "
              f"{s['t_p90_m']:.3f} | {s['r_median_deg']:.2f} / {s['r_p90_deg']:.2f} | "
              f"{s['estimate_ms_median']:.1f} / {s['estimate_ms_p90']:.1f} "
              f"({s['estimate_cpu_ms_median']:.1f}) | {target_text} | "
              f"{met} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
