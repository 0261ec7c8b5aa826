#!/usr/bin/env python3
"""Gardens Point Walking with the standard protocol, through the evaluation pipeline.

Map: day_left (200 images, pseudo-positions 1 m apart). Queries: day_right (viewpoint change)
and night_right (day/night + viewpoint). Positives: +-2 frames (VPR-Bench). For each query set
the full ``selavpr evaluate`` outputs (evaluation.json, summary.md, plots) are written to
``OUT/<query set>/``, and one line of figures is printed per set.

    python bench/eval_gardens_point.py --extractor classical           # weight-free baseline
    python bench/eval_gardens_point.py --extractor selavpr --checkpoint SelaVPR_msls.safetensors

Untrained SelaVPR weights are refused: their figures would say nothing about the method
(``--allow-untrained`` runs them anyway, for a pipeline check, and the report says so).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selavpr_ros.eval.evaluate import (  # noqa: E402
    EvalConfig,
    latency_summary,
    map_ground_truth,
    run_offline,
    score,
)
from selavpr_ros.eval.report import build_report, extractor_description, write_outputs  # noqa: E402
from selavpr_ros.io.folders import FolderOptions, folder_frames  # noqa: E402
from selavpr_ros.localizer import Localizer, LocalizerConfig  # noqa: E402
from selavpr_ros.map import PlaceInfo, PlaceMap  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gardens_point_walking"
QUERY_SETS = ("day_right", "night_right")


def make_extractor(args: argparse.Namespace, map_images: list[Any]) -> Any:
    """Make the extractor ``build-map`` would make.

    A classical one learns its vocabulary from the map's images (day_left), never from the
    queries.
    """
    from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor

    extractor = create_extractor(ExtractorSpec(kind=args.extractor, checkpoint=args.checkpoint,
                                               device=args.device, batch_size=8))
    if extractor.needs_fit:
        extractor = extractor.fit(map_images)
    return extractor


def build_map(path: Path, extractor: Any, folder: Path, batch: int = 16) -> PlaceMap:
    frames = list(folder_frames(folder, FolderOptions(spacing=1.0)))
    place_map = PlaceMap.create(path, extractor, map_frame="route")
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        features = extractor.extract([f.load() for f in chunk])
        place_map.append(features, [
            PlaceInfo(stamp_ns=f.stamp_ns, frame_id=f.frame_id, position=f.pose.position,
                      orientation=(0.0, 0.0, 0.0, 1.0), source=f.source,
                      source_ref=f.source_ref) for f in chunk])
    return place_map


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=Path("gardens_point_eval"))
    parser.add_argument("--extractor", default="classical", choices=("classical", "selavpr"))
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--rerank-k", type=int, default=-1, help="-1: all of top-k")
    parser.add_argument("--frame-tolerance", type=int, default=2)
    parser.add_argument("--allow-untrained", action="store_true")
    args = parser.parse_args()
    if not (args.data / "day_left").is_dir():
        sys.exit(f"Gardens Point data not found at {args.data}")

    from selavpr_ros.io.folders import list_images
    from selavpr_ros.io.images import read_image_file

    map_images = [read_image_file(p) for p in list_images(args.data / "day_left")]
    t0 = time.perf_counter()
    extractor = make_extractor(args, map_images)
    if extractor.info.fingerprint.startswith("untrained-") and not args.allow_untrained:
        sys.exit("these SelaVPR weights are untrained: no place recognition result can be "
                 "measured with them (use --extractor classical, or a trained checkpoint)")
    args.out.mkdir(parents=True, exist_ok=True)
    map_path = args.out / "day_left.selavpr"
    if map_path.exists():
        shutil.rmtree(map_path)
    place_map = build_map(map_path, extractor, args.data / "day_left")
    print(f"map: {len(place_map)} places from day_left in {time.perf_counter() - t0:.1f} s "
          f"({extractor.info.name})")
    config = LocalizerConfig(top_k=args.top_k,
                             rerank_k=None if args.rerank_k < 0 else args.rerank_k)
    eval_config = EvalConfig(frame_tolerance=args.frame_tolerance)
    localizer = Localizer(place_map, extractor, config)
    positions, map_frames = map_ground_truth(place_map)
    description = extractor_description(extractor, args.extractor, args.checkpoint, args.device)
    for name in QUERY_SETS:
        folder = args.data / name
        frames = list(folder_frames(folder, FolderOptions(spacing=1.0)))
        run = run_offline(localizer, frames, total=len(frames))
        scores = score(run.records, positions, map_frames, eval_config)
        report = build_report(
            mode="offline", place_map=place_map, extractor=description,
            localizer_config=config, eval_config=eval_config,
            source={"kind": "images", "images": str(folder), "spacing": 1.0,
                    "data_set": f"Gardens Point Walking: day_left map, {name} queries"},
            records=run.records, scores=scores, latency=latency_summary(run.records, run.wall_s))
        write_outputs(report, positions, args.out / name)
        before, after = scores.recall_before, scores.recall_after
        pr = scores.pr["confidence"]
        mnn = scores.pr.get("mnn_score")
        lat = report["latency"]["end_to_end_ms"]
        print(f"{name}: R@1/5/10 global {before.recall[0]:.3f}/{before.recall[1]:.3f}/"
              f"{before.recall[2]:.3f}, re-ranked {after.recall[0]:.3f}/{after.recall[1]:.3f}/"
              f"{after.recall[2]:.3f}; accepted {scores.counts['accepted']} "
              f"({scores.counts['accepted_correct']} correct); confidence PR AUC {pr.auc:.3f}, "
              f"R@100%P {pr.recall_at_100:.3f} (>= {pr.threshold_at_100})"
              + (f"; MNN PR AUC {mnn.auc:.3f}, R@100%P {mnn.recall_at_100:.3f} "
                 f"(min_score {mnn.threshold_at_100})" if mnn else "")
              + f"; latency p50/p95/p99 {lat['p50']:.0f}/{lat['p95']:.0f}/{lat['p99']:.0f} ms")
    place_map.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
