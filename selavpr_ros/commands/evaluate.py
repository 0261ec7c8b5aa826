r"""``selavpr evaluate MAP``: Recall@N, precision-recall, latency and plots for recorded queries.

Examples::

    selavpr evaluate campus.selavpr --bag drive2 --image-topic /camera/image_raw \
        --pose-topic /odom --checkpoint SelaVPR_msls.safetensors --out eval_drive2
    selavpr evaluate gp_day_left.selavpr --images gardens_point_walking/night_right \
        --frame-tolerance 2 --checkpoint ... --out eval_gp_night
    selavpr evaluate campus.selavpr --bag drive2 --live --rate 1.0 ...   # through the node

Offline, every frame is answered by the same localizer core the node runs. With ``--live`` the
bag is replayed onto ROS 2 (with /clock) to a ``localizer_node`` that this command starts (or
one already running, ``--node-running``), the node's published answers are scored, and the
frames it answered are also answered offline and compared one by one.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from selavpr_ros.commands.extractor_options import add_extractor_arguments, spec_from_args
from selavpr_ros.commands.localizer_options import add_localizer_arguments, config_from_args
from selavpr_ros.commands.source_options import add_source_arguments, source_from_args
from selavpr_ros.errors import ConfigError

log = logging.getLogger(__name__)


def _ns(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected N values like 1,5,10,20, got '{text}'") from err
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"N values must be >= 1, got '{text}'")
    return values


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Recall@N, precision-recall, latency and plots of a map against recorded queries",
        description=(
            "Answer recorded query frames (a rosbag2 with image and pose topics, or an image "
            "folder) with a place map and score the answers against ground truth: Recall@N "
            "before and after re-ranking, precision-recall of the accept decision, latency. "
            "Writes evaluation.json, summary.md and PNG plots to --out."
        ),
    )
    parser.add_argument("map", metavar="MAP", help="place map directory")
    # --rate is the live replay speed here, so folder frames keep the default rate and frame id
    add_source_arguments(parser, "queries (one of --bag or --images)", folder_timing=False)
    gt = parser.add_argument_group("ground truth and metrics")
    gt.add_argument("--radius", type=float, default=25.0, metavar="M",
                    help="positives: places within M metres (default 25)")
    gt.add_argument("--frame-tolerance", type=int, default=None, metavar="N",
                    help="positives: places within N frames (by file-name number or bag "
                         "message index), e.g. 2 for Gardens Point / Nordland; overrides "
                         "--radius")
    gt.add_argument("--distance-dims", type=int, default=2, choices=(2, 3),
                    help="2: horizontal distance (default), 3: distance in space")
    gt.add_argument("--recall-n", type=_ns, default=(1, 5, 10, 20), metavar="N,N,...",
                    help="N of Recall@N (default 1,5,10,20)")
    gt.add_argument("--pr-score", default="confidence",
                    choices=("confidence", "mnn_score", "score_fraction", "global_similarity"),
                    help="headline score of the precision-recall figures (all are reported)")
    add_localizer_arguments(parser, "localizer (the node's parameters)")
    live = parser.add_argument_group("live evaluation through a localizer_node over DDS")
    live.add_argument("--live", action="store_true",
                      help="replay the bag (with /clock) to a localizer_node and score its "
                           "answers")
    live.add_argument("--rate", type=float, default=1.0,
                      help="replay speed factor (default 1.0 = recorded timing)")
    live.add_argument("--node-running", action="store_true",
                      help="use a localizer_node that is already running (same map and settings)")
    live.add_argument("--result-topic", default="/place_recognition",
                      help="the node's PlaceRecognition topic (default /place_recognition)")
    live.add_argument("--startup-timeout", type=float, default=120.0, metavar="S",
                      help="seconds to wait for the node to subscribe (default 120)")
    live.add_argument("--no-compare", action="store_true",
                      help="do not re-run the answered frames offline for comparison")
    out = parser.add_argument_group("output")
    out.add_argument("--out", default="selavpr_eval", help="output directory "
                                                           "(default ./selavpr_eval)")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_extractor_arguments(parser)
    parser.set_defaults(handler=run)


def localizer_config(args: argparse.Namespace) -> Any:
    return config_from_args(args, args.device, args.precision)


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.eval.evaluate import (
        EvalConfig,
        latency_summary,
        map_ground_truth,
        run_offline,
        score,
    )
    from selavpr_ros.eval.report import build_report, extractor_description, write_outputs
    from selavpr_ros.extractors.factory import extractor_for_map, recorded_kind
    from selavpr_ros.io.sources import open_frames
    from selavpr_ros.localizer import Localizer
    from selavpr_ros.map import PlaceMap

    eval_config = EvalConfig(ns=args.recall_n, radius_m=args.radius,
                             frame_tolerance=args.frame_tolerance,
                             distance_dims=args.distance_dims, pr_score=args.pr_score)
    source = source_from_args(args, folder_timing=False)
    if args.live and not args.bag:
        raise ConfigError("--live replays a rosbag: give --bag")
    if not args.rate > 0:
        raise ConfigError(f"--rate must be > 0, got {args.rate}")
    spec = spec_from_args(args)
    config = localizer_config(args)
    out_dir = Path(args.out)
    with PlaceMap.open(args.map) as place_map:
        extractor = extractor_for_map(spec, place_map)
        localizer = Localizer(place_map, extractor, config)
        print(f"evaluate: {localizer.describe_rerank()}", flush=True)
        live_info = None
        source_info: dict[str, Any] = {"kind": "bag" if args.bag else "images",
                                       **source.describe()}
        with open_frames(source) as opened:
            frames, total, topic = opened.frames, opened.total, opened.image_topic
            if topic:
                source_info["image_topic"] = topic  # the bag's only one when not given
            if args.live:
                from selavpr_ros.ros.live_eval import LiveOptions, run_live

                options = LiveOptions(
                    bag=args.bag, image_topic=topic, rate=args.rate,
                    node_running=args.node_running, result_topic=args.result_topic,
                    startup_timeout_s=args.startup_timeout, map_path=str(place_map.path),
                    spec=spec, config=config, log_dir=out_dir)
                frames_list = list(frames)
                live_run = run_live(options, frames_list, progress=not args.no_progress)
                records, wall_s, live_info = live_run.records, live_run.wall_s, live_run.info
                if not args.no_compare:
                    from selavpr_ros.ros.live_eval import compare

                    stamps = {r.stamp_ns for r in records if r.answered}
                    offline = run_offline(localizer, frames_list, total=len(frames_list),
                                          progress=not args.no_progress, only_stamps=stamps)
                    live_info["agreement"] = compare(offline.records, records)
                    sizes = {r.stamp_ns: r.image_hw for r in offline.records}
                    records = [replace(r, image_hw=sizes.get(r.stamp_ns)) for r in records]
            else:
                offline = run_offline(localizer, frames, total=total,
                                      progress=not args.no_progress, camera=opened.camera)
                records, wall_s = offline.records, offline.wall_s
        if not records:
            raise ConfigError("the query source gave no frames")
        positions, map_frames = map_ground_truth(place_map)
        scores = score(records, positions, map_frames, eval_config)
        report = build_report(
            mode="live" if args.live else "offline", place_map=place_map,
            extractor=extractor_description(extractor, recorded_kind(extractor.info),
                                            spec.checkpoint, spec.device,
                                            spec.precision),
            localizer_config=localizer.effective_config,
            eval_config=eval_config, source=source_info,
            records=records, scores=scores, latency=latency_summary(records, wall_s),
            live=live_info)
    files = write_outputs(report, positions, out_dir, plots=not args.no_plots)
    _print_summary(report, files)
    return 0


def _print_summary(report: dict[str, Any], files: dict[str, Path]) -> None:
    after, before = report["recall"]["after_rerank"], report["recall"]["before_rerank"]
    c = report["counts"]

    def fmt(data: dict[str, Any]) -> str:
        return "  ".join(f"R@{n} {'n/a' if r is None else f'{100 * r:.1f}%'}"
                         for n, r in data["recall"].items())

    headline = report["precision_recall"][report["protocol"]["pr_score"]]
    thr, auc, r100 = (headline["threshold_at_100_precision"], headline["auc"],
                      headline["recall_at_100_precision"])
    print(f"queries: {c['queries']} ({c['evaluated']} evaluated, {c['without_positive']} "
          f"without a positive, {c['without_ground_truth']} without ground truth, "
          f"{c['unanswered']} unanswered)")
    print(f"recall before re-ranking: {fmt(before)}")
    print(f"recall after re-ranking:  {fmt(after)}")
    print(f"accepted {c['accepted']} ({c['accepted_correct']} correct, {c['accepted_wrong']} "
          f"wrong); {headline['score']}: PR AUC {'n/a' if auc is None else f'{auc:.3f}'}, "
          f"recall at 100% precision {'n/a' if r100 is None else f'{100 * r100:.1f}%'} "
          f"(threshold {'none' if thr is None else f'{thr:.4g}'})")
    e2e = report["latency"]["end_to_end_ms"]
    if e2e["count"]:
        print(f"latency end to end: p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms, "
              f"p99 {e2e['p99']:.1f} ms")
    live = report.get("live")
    if live:
        print(f"live: sent {live['frames_sent']}, answered {live['frames_answered']}, "
              f"unanswered {live['frames_unanswered']}")
        if live.get("agreement"):
            a = live["agreement"]
            print(f"offline vs live on {a['compared']} answered frames: same ranking "
                  f"{a['same_ranking']}, same decision {a['same_decision']}")
    for name, path in files.items():
        print(f"{name}: {path}")
