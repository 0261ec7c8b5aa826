"""The query pose as the localizer computes it (map with and without depth points).

A real map of the synthetic street (classical extractor, camera model, fp16 points) and the
query drive 3 m to the side; every query is answered by :class:`Localizer` (accepted: margin
off), and the published pose is compared with the exact one. ``pose`` is the localizer's
whole pose stage (MNN pairs of the used places, refinement when used, estimator).

    python bench/bench_localizer_pose.py --frames 30
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402
from selavpr_ros.synthetic import Camera, RouteConfig  # noqa: E402
from selavpr_ros.synthetic.pose_scene import PoseSceneConfig, build_pose_scene  # noqa: E402


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
    for points in (True, False):
        path = Path(tempfile.mkdtemp()) / "street.selavpr"
        with PlaceMap.create(path, scene.fitted, camera=scene.camera) as pm:
            pm.append(scene.map_features,
                      [PlaceInfo(stamp_ns=f.stamp_ns, position=f.position,
                                 orientation=f.orientation) for f in scene.map_frames],
                      points=scene.map_points if points else None)
            localizer = Localizer(pm, scene.fitted, LocalizerConfig(top_k=10, min_margin=0.0))
            rows = []
            for i in range(2, args.frames - 2):
                truth = scene.query_frames[i]
                result = localizer.query(truth.image, camera=scene.camera)
                assert result.pose is not None and result.pose.position is not None
                rows.append((result.pose.source, float(np.linalg.norm(
                    np.subtract(result.pose.position, truth.position))),
                    result.timings_ms["pose"]))
        sources = {s: sum(1 for r in rows if r[0] == s) for s in sorted({r[0] for r in rows})}
        t = np.array([r[1] for r in rows])
        ms = np.array([r[2] for r in rows])
        print(f"{'with' if points else 'without'} depth points: {sources}; translation "
              f"median {np.median(t):.3f} m, p90 {np.percentile(t, 90):.3f} m; pose stage "
              f"median {np.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms")
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
