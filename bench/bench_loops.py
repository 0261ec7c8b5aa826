"""Loop closure within one run: precision/recall on revisit drives and per-keyframe cost.

Sections (``--sections``):
- ``synthetic``: the synthetic revisit drive (pass one, unseen return loop, pass two 3 m to the
  side in other light), classical extractor; truth within ``--radius`` m.
- ``relative``: the synthetic drive again with camera info, with and without depth: the loops'
  relative poses against the renderer's poses (translation / rotation error, claimed sigma).
- ``gardens``: Gardens Point Walking as one drive, day_left then day_right; frame i of the second
  half revisits frames i-2 .. i+2 of the first (a correspondence file written from the names).
- ``cost``: insert + query + decide per keyframe (extraction excluded) as the run grows to
  ``--keyframes``, from real classical features of synthetic images (reused along the path).

    python bench/bench_loops.py --sections synthetic,relative,gardens,cost --out /tmp/loops
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))  # loop_testlib

from selavpr_ros.eval.loop_plots import plot_pr, plot_trajectory  # noqa: E402
from selavpr_ros.eval.loops import label, metrics, run_drive  # noqa: E402
from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor  # noqa: E402
from selavpr_ros.io.folders import FolderOptions, folder_frames  # noqa: E402
from selavpr_ros.io.frames import Frame  # noqa: E402
from selavpr_ros.io.images import read_image_file  # noqa: E402
from selavpr_ros.io.poses import Pose, PoseTrack  # noqa: E402
from selavpr_ros.localizer.config import from_values  # noqa: E402
from selavpr_ros.loop import LoopConfig, LoopDetector  # noqa: E402
from selavpr_ros.synthetic import Camera, RouteConfig  # noqa: E402
from selavpr_ros.synthetic.revisit import revisit_drive  # noqa: E402

GARDENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "gardens_point_walking"


def loop_config(args: argparse.Namespace) -> LoopConfig:
    """Return the default LoopConfig with the ``--set name=value`` overrides."""
    values: dict[str, object] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        values[name] = float(value) if "." in value else int(value)
    return from_values(LoopConfig, values)


def _report(name: str, records: list, out: Path | None) -> dict:
    m = metrics(records)
    print(f"[{name}] keyframes {m['keyframes']}, positives {m['positives']}, loops {m['loops']} "
          f"({m['false_loops']} false): precision {m['precision']:.3f}, recall {m['recall']:.3f},"
          f" recall@100%P {m['recall_at_100_precision']:.3f}, "
          f"{m['ms_per_keyframe_p50']:.0f} ms/keyframe p50 (no extraction)", flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_pr(m, out / f"{name}_pr.png")
        plot_trajectory(records, out / f"{name}_trajectory.png")
    return m


def synthetic(args: argparse.Namespace, extractor_cfg: ClassicalConfig) -> dict:
    route = RouteConfig(seed=args.seed, frames=args.frames, spacing_m=2.0, rate_hz=2.0,
                        camera=Camera(width=320, height=240))
    drive = revisit_drive(route)
    extractor = ClassicalExtractor(extractor_cfg).fit([f.image for f in drive.frames[::2]])
    detector = LoopDetector(extractor, loop_config(args))
    track = PoseTrack([Pose(f.stamp_ns, f.position, f.orientation) for f in drive.frames]
                      + drive.return_poses)
    frames = [Frame(f.stamp_ns, Frame.of_array(f.image), Pose(f.stamp_ns, f.position,
                                                             f.orientation), "synthetic",
                    str(i)) for i, f in enumerate(drive.frames)]
    records = run_drive(frames, detector, track, progress=True, total=len(frames))
    records = label(records, detector, radius_m=args.radius)
    return _report("synthetic", records, args.out)


def relative(args: argparse.Namespace, extractor_cfg: ClassicalConfig) -> dict:
    """Relative poses of the synthetic drive's loops against the renderer's poses."""
    from loop_testlib import run_detector  # test/
    from selavpr_ros.geometry.camera import CameraModel
    from selavpr_ros.geometry.transforms import invert, pose_matrix, rotation_angle_deg
    from selavpr_ros.synthetic import camera_info
    from selavpr_ros.synthetic.revisit import revisit_depths

    route = RouteConfig(seed=args.seed, frames=args.frames, spacing_m=2.0, rate_hz=2.0,
                        camera=Camera(width=320, height=240))
    drive = revisit_drive(route)
    depths = revisit_depths(route, drive)
    extractor = ClassicalExtractor(extractor_cfg).fit([f.image for f in drive.frames[::2]])
    out = {}
    for mode in ("depth", "no_depth"):
        detector = LoopDetector(extractor, loop_config(args))
        detector.camera = CameraModel.from_camera_info(camera_info(route.camera))
        detector.two_view_relative = mode == "no_depth"
        errors, loops, ms = [], 0, []
        # the tests' feeding: odometry (return loop included) and posed images in time order
        for _, r in run_detector(drive, detector, depths if mode == "depth" else None):
            if not r.loop:
                continue
            loops += 1
            ms.append(r.timings_ms["query"] + r.timings_ms["insert"])
            rel = r.relative
            if rel is None or not rel.ok:
                continue
            truth = invert(pose_matrix(r.then_position, r.then_orientation)) @ pose_matrix(
                r.keyframe.position, r.keyframe.orientation)
            est = rel.matrix()
            sd = float(np.sqrt(np.trace(rel.covariance[:3, :3])))
            errors.append((float(np.linalg.norm(est[:3, 3] - truth[:3, 3])),
                           rotation_angle_deg(est[:3, :3], truth[:3, :3]), sd))
        e = np.asarray(errors).reshape(-1, 3)
        out[mode] = {"loops": loops, "with_pose": len(errors),
                     "translation_m_median": float(np.median(e[:, 0])) if len(e) else None,
                     "translation_m_p90": float(np.percentile(e[:, 0], 90)) if len(e) else None,
                     "rotation_deg_median": float(np.median(e[:, 1])) if len(e) else None,
                     "claimed_sd_m_median": float(np.median(e[:, 2])) if len(e) else None,
                     "loop_ms_median": float(np.median(ms)) if ms else None}
        print(f"[relative {mode}] {out[mode]}", flush=True)
    return out


def gardens(args: argparse.Namespace, extractor_cfg: ClassicalConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "drive"
        folder.mkdir()
        gp = args.gardens
        names = sorted(os.listdir(gp / "day_left"))
        for half, sub in (("a", "day_left"), ("b", "day_right")):
            for n in names:
                (folder / f"{half}_{n}").symlink_to(gp / sub / n)
        corr = {}
        lines = ["# day_right frame i revisits day_left frames i-2 .. i+2"]
        for i, n in enumerate(names):
            near = [f"a_{names[j]}" for j in range(max(0, i - 2), min(len(names), i + 3))]
            corr[f"b_{n}"] = set(near)
            lines.append(",".join([f"b_{n}", *near]))
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "gardens_correspondences.csv").write_text("\n".join(lines) + "\n")
        sample = [read_image_file(gp / "day_left" / n) for n in names[::4]]
        extractor = ClassicalExtractor(extractor_cfg).fit(sample)
        # pseudo-positions 1 m apart, 1 frame/s: exclusion 30 s / 20 m = 30 / 20 frames
        detector = LoopDetector(extractor, loop_config(args))
        frames = list(folder_frames(folder, FolderOptions(spacing=1.0, rate_hz=1.0)))
        records = run_drive(frames, detector, None, progress=True, total=len(frames))
        records = label(records, detector, correspondences=corr)
    return _report("gardens", records, args.out)


def cost(args: argparse.Namespace, extractor_cfg: ClassicalConfig) -> dict:
    route = RouteConfig(seed=args.seed, frames=40, spacing_m=2.0,
                        camera=Camera(width=320, height=240))
    from selavpr_ros.synthetic import render_route

    images = [f.image for f in render_route(route)[0]]
    extractor = ClassicalExtractor(extractor_cfg).fit(images)
    feats = [extractor.extract([im]) for im in images]
    detector = LoopDetector(extractor, LoopConfig(keyframe_distance_m=0.0))
    rows = []
    for i in range(args.keyframes):
        pose = Pose(10**18 + i * 10**9, (float(i), 0.0, 0.0))
        t0 = time.perf_counter()
        r = detector.process(pose, features=feats[i % len(feats)], path_m=float(i))
        total = (time.perf_counter() - t0) * 1e3
        assert r is not None
        rows.append((i, r.timings_ms["insert"], r.timings_ms["query"], total))
    by = {}
    for lo in range(0, args.keyframes, max(1, args.keyframes // 5)):
        part = rows[lo: lo + max(1, args.keyframes // 5)]
        by[f"{lo}-{part[-1][0]}"] = {
            "insert_ms_median": float(np.median([p[1] for p in part])),
            "query_decide_ms_median": float(np.median([p[2] for p in part])),
            "total_ms_median": float(np.median([p[3] for p in part])),
            "total_ms_p90": float(np.percentile([p[3] for p in part], 90))}
    for k, v in by.items():
        print(f"[cost] keyframes {k}: insert {v['insert_ms_median']:.2f} ms, query+decide "
              f"{v['query_decide_ms_median']:.0f} ms, total {v['total_ms_median']:.0f} ms "
              f"(p90 {v['total_ms_p90']:.0f})", flush=True)
    return {"local_features": extractor.info.local_count, "by_keyframes": by}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="synthetic,gardens,cost")
    parser.add_argument("--frames", type=int, default=60, help="synthetic frames per pass")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--radius", type=float, default=10.0)
    parser.add_argument("--keyframes", type=int, default=1000)
    parser.add_argument("--local-stride", type=int, default=1,
                        help="classical local features: every N-th grid point")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="LoopConfig field for the revisit drives (repeatable)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--gardens", type=Path, default=GARDENS,
                        help="Gardens Point Walking folder (default: shared/ beside the clone)")
    args = parser.parse_args()
    cfg = ClassicalConfig(local_stride=args.local_stride)
    print(f"load: {os.getloadavg()}", flush=True)
    results = {}
    for name in args.sections.split(","):
        sections = {"synthetic": synthetic, "relative": relative, "gardens": gardens,
                    "cost": cost}
        results[name] = sections[name](args, cfg)
    print(f"load: {os.getloadavg()}", flush=True)
    if args.out is not None:
        (args.out / "bench_loops.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
