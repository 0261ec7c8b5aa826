"""``selavpr evaluate-loops``: loop closure on one drive with revisits (see eval/loops.py)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from selavpr_ros.commands.extractor_options import add_extractor_arguments, spec_from_args
from selavpr_ros.commands.source_options import add_source_arguments, source_from_args
from selavpr_ros.errors import ConfigError
from selavpr_ros.extractors.factory import ExtractorSpec

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    from selavpr_ros.localizer.config import settings
    from selavpr_ros.loop.config import LoopConfig

    parser = subparsers.add_parser(
        "evaluate-loops", help="loop-closure precision/recall on one drive with revisits",
        description="Run the loop-closure detector over one drive (as loop_closure_node would) "
                    "and score its loops against ground truth by distance or by a "
                    "correspondence file.")
    add_source_arguments(parser, "drive")
    add_extractor_arguments(parser)
    parser.add_argument("--prior-map", default="",
                        help="map giving the extractor (e.g. the classical vocabulary); without "
                             "it the extractor is fitted on the drive: classical unless "
                             "--extractor or --checkpoint says otherwise")
    parser.add_argument("--local-stride", type=int, default=1, metavar="N",
                        help="classical extractor fitted on the drive: local features on every "
                             "N-th grid point (MNN re-ranking costs fall with N^2; default 1)")
    truth = parser.add_argument_group("ground truth")
    truth.add_argument("--radius", type=float, default=10.0, metavar="M",
                       help="a loop is true within this distance (default 10 m)")
    truth.add_argument("--correspondences", default="",
                       help="CSV query,match[,match...] by frame reference (file name or "
                            "message index); replaces --radius")
    rules = parser.add_argument_group("loop decision (loop_closure_node's parameters)")
    for s in settings(config_class=LoopConfig):
        rules.add_argument(f"--{s.name.replace('_', '-')}", type=type(s.default),
                           default=s.default, help=f"{s.description} (default {s.default})")
    parser.add_argument("--out", default="", help="folder for report.json and the PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _extractor(args: argparse.Namespace):  # noqa: ANN202 - Extractor
    """Return the prior map's extractor, else one fitted on the drive (classical by default)."""
    from selavpr_ros.extractors.factory import extractor_for_map
    from selavpr_ros.map import PlaceMap

    spec = spec_from_args(args)
    if args.local_stride < 1:
        raise ConfigError(f"--local-stride must be >= 1, got {args.local_stride}")
    if args.prior_map:
        if args.local_stride != 1:
            raise ConfigError("--local-stride applies to an extractor fitted on the drive; "
                              "--prior-map fixes the extractor")
        with PlaceMap.open(args.prior_map) as place_map:
            extractor = extractor_for_map(spec, place_map)
        log.info("extractor %s from the prior map %s", extractor.info.describe(),
                 args.prior_map)
        return extractor
    if not spec.kind and not spec.checkpoint:  # nothing to say which: the one needing nothing
        spec = replace(spec, kind="classical")
    extractor = _fitted_extractor(args, spec)
    log.info("extractor %s, fitted on the drive (no --prior-map)", extractor.info.describe())
    return extractor


def _fitted_extractor(args: argparse.Namespace,
                      spec: ExtractorSpec):  # noqa: ANN202 - Extractor
    """Return the extractor of ``spec``, with its learned state fitted on the drive's images."""
    from selavpr_ros.io.sources import open_frames
    from selavpr_ros.mapping.open_map import new_extractor

    def sample(count: int) -> list[np.ndarray]:
        with open_frames(source_from_args(args)) as opened:
            total = opened.total or 0
            want = set(np.linspace(0, max(total - 1, 0), num=min(count, total)).round()
                       .astype(int))
            return [f.load() for i, f in enumerate(opened.frames) if i in want]

    if args.local_stride == 1:
        return new_extractor(spec, sample)
    from selavpr_ros.extractors.classical import ClassicalExtractor
    from selavpr_ros.extractors.factory import create_extractor

    extractor = create_extractor(spec)
    if not isinstance(extractor, ClassicalExtractor):
        raise ConfigError("--local-stride needs the classical extractor (fitted on the drive)")
    strided = ClassicalExtractor(replace(extractor.config, local_stride=args.local_stride))
    return strided.fit(sample(strided.fit_sample_size))


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.eval.loop_plots import plot_pr, plot_trajectory
    from selavpr_ros.eval.loops import (
        check_correspondences,
        label,
        metrics,
        read_correspondences,
        run_drive,
    )
    from selavpr_ros.io.sources import open_frames
    from selavpr_ros.localizer.config import from_values, settings
    from selavpr_ros.loop import LoopDetector
    from selavpr_ros.loop.config import LoopConfig

    config = from_values(LoopConfig, {s.name: getattr(args, s.name)
                                     for s in settings(config_class=LoopConfig)})
    corr = read_correspondences(args.correspondences) if args.correspondences else None
    if args.radius <= 0:
        raise ConfigError(f"--radius must be > 0, got {args.radius}")
    source = source_from_args(args)
    if corr is not None:  # before the (long) run: names of another drive score nothing
        with open_frames(source) as opened:
            refs = [frame.source_ref for frame in opened.frames]
        check_correspondences(corr, refs, args.correspondences,
                              "message index on the image topic (0, 1, 2, ...)" if source.bag
                              else "file name in the image folder")
    extractor = _extractor(args)
    detector = LoopDetector(extractor, config)
    track = None
    if source.bag:
        from selavpr_ros.io.bags import BagFrames

        with BagFrames(source.bag) as bag:
            track, _ = bag.read_poses(source.pose_topic)
    with open_frames(source) as opened:
        records = run_drive(opened.frames, detector, track, progress=not args.no_progress,
                            total=opened.total)
    records = label(records, detector, radius_m=None if corr is not None else args.radius,
                    correspondences=corr)
    report = metrics(records)
    report["config"] = {s.name: getattr(config, s.name)
                        for s in settings(config_class=LoopConfig)}
    report["extractor"] = extractor.info.describe()
    report["local_features"] = extractor.info.local_count
    report["ground_truth"] = (f"correspondences {args.correspondences}" if corr is not None
                              else f"within {args.radius} m")
    print(f"keyframes {report['keyframes']}, positives {report['positives']}, loops "
          f"{report['loops']} ({report['true_loops']} true, {report['false_loops']} false)")
    print(f"precision {report['precision']:.3f}, recall {report['recall']:.3f}, recall at "
          f"100% precision {report['recall_at_100_precision']:.3f}, "
          f"{report['ms_per_keyframe_p50']:.1f} ms per keyframe (p50, without extraction)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        report["loops_list"] = [
            {"now": r.stamp_ns, "then": r.then_stamp_ns, "now_ref": r.ref, "true": r.true_loop,
             "mnn_score": r.mnn_score} for r in records if r.loop]
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        plot_pr(report, out / "loops_pr.png")
        plot_trajectory(records, out / "loops_trajectory.png")
        print(f"report and plots in {out}")
    return 0
