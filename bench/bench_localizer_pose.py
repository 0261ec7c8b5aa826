"""The query pose as the localizer computes it (map with and without depth points).

A real map of the synthetic street (classical extractor, camera model, fp16 points) and the
query drive 3 m to the side; every query is answered by :class:`Localizer` (accepted: margin
off), and the published pose is compared with the exact one. ``pose`` is the localizer's
whole pose stage (the re-ranking's MNN pairs of the used places turned into pixels and points,
refinement when used, estimator), in wall time and in this process's CPU time (less inflated
on a busy machine); ``rerank`` is the re-ranking that keeps those pairs.

    python bench/bench_localizer_pose.py --frames 30
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.geometry.pose import normalized_error_squared  # noqa: E402
from selavpr_ros.geometry.transforms import pose_matrix  # noqa: E402
from selavpr_ros.io.poses import rotation_angle  # noqa: E402
from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402
from selavpr_ros.synthetic import Camera, RouteConfig  # noqa: E402
from selavpr_ros.synthetic.pose_scene import PoseSceneConfig, build_pose_scene  # noqa: E402


class CpuTimed:
    """Wraps the pose stage to record this process's CPU time per call (ms)."""

    def __init__(self, run: Callable[..., Any]) -> None:
        self.run = run
        self.ms: list[float] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        out = self.run(*args, **kwargs)
        self.ms.append(1e3 * (time.process_time() - start))
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    route = RouteConfig(seed=args.seed, frames=args.frames, spacing_m=2.0,
                        camera=Camera(width=320, height=240))
    config = PoseSceneConfig(route=route)
    scene = build_pose_scene(replace(config, extractor=replace(config.extractor,
                                                               long_side=320)), progress=True)
    assert scene.fitted is not None
    runs = [(True, True), (False, True), (False, False)]  # (depth points, pose_refine)
    for points, refine in runs:
        path = Path(tempfile.mkdtemp()) / "street.selavpr"
        with PlaceMap.create(path, scene.fitted, camera=scene.camera) as pm:
            pm.append(scene.map_features,
                      [PlaceInfo(stamp_ns=f.stamp_ns, position=f.position,
                                 orientation=f.orientation) for f in scene.map_frames],
                      points=scene.map_points if points else None)
            localizer = Localizer(pm, scene.fitted, LocalizerConfig(
                top_k=10, min_margin=0.0, pose_refine=refine))
            timed = CpuTimed(localizer.pose.estimate)
            localizer.pose.estimate = timed  # type: ignore[method-assign]
            rows = []
            for i in range(2, args.frames - 2):
                truth = scene.query_frames[i]
                result = localizer.query(truth.image, camera=scene.camera)
                pose = result.pose
                assert pose is not None and pose.position is not None
                rot = float("nan")
                if pose.orientation is not None:
                    rot = float(np.degrees(rotation_angle(pose.orientation, truth.orientation)))
                nees = normalized_error_squared(
                    pose, pose_matrix(truth.position, truth.orientation)) \
                    if pose.covariance is not None else float("nan")
                rows.append((pose.source, float(np.linalg.norm(
                    np.subtract(pose.position, truth.position))), rot,
                    result.timings_ms["pose"], result.timings_ms["rerank"], nees,
                    6 if pose.orientation is not None else 3))
        sources = {s: sum(1 for r in rows if r[0] == s) for s in sorted({r[0] for r in rows})}
        t, r, ms, rerank = (np.array([row[j] for row in rows]) for j in (1, 2, 3, 4))
        print(f"{'with' if points else 'without'} depth points, refine {refine}: {sources}; "
              f"translation median {np.median(t):.3f} m, p90 {np.percentile(t, 90):.3f} m; "
              f"rotation median {np.nanmedian(r):.2f} deg, p90 {np.nanpercentile(r, 90):.2f}; "
              f"pose stage median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms "
              f"(CPU median {np.median(timed.ms):.1f} ms); "
              f"rerank (top {localizer.rerank_k}) median "
              f"{np.median(rerank):.0f} ms; load average {os.getloadavg()}")
        for source in sources:  # covariance honesty: mean NEES against its chi-square band
            nees = np.array([row[5] for row in rows if row[0] == source])
            dim = next(row[6] for row in rows if row[0] == source)
            half = 1.96 * np.sqrt(2 * dim / len(nees))  # normal approximation, mean of N
            print(f"  {source}: mean NEES {np.nanmean(nees):.2f} (dimension {dim}, 95% band "
                  f"{dim - half:.2f}-{dim + half:.2f} for {len(nees)}), median "
                  f"{np.nanmedian(nees):.2f}, max {np.nanmax(nees):.1f}")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
