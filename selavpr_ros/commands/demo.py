"""``selavpr demo``: the whole pipeline on a fresh machine, no weights and no data needed.

By default it renders a synthetic street route (two drives: the second offset sideways, at
another time of day, with noise; exact poses), builds a place map from drive 1 with the
weight-free classical extractor, answers every frame of drive 2 offline, then starts a
``localizer_node`` and replays drive 2 through it over ROS 2 (with /clock) and scores the answers
the node published. Each step runs the same ``selavpr`` subcommand a user would run, and the
demo prints it. ``--checkpoint`` uses SelaVPR weights instead; ``--images/--queries`` uses real
image folders (e.g. Gardens Point: ``--images .../day_left --queries .../day_right``).

DDS traffic stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) in a random
``ROS_DOMAIN_ID`` unless the environment already sets them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import time
from pathlib import Path

from selavpr_ros.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline end to end (synthetic route, no weights needed)",
        description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", default="selavpr_demo", help="output directory "
                                                              "(default ./selavpr_demo)")
    parser.add_argument("--frames", type=int, default=100, help="frames per synthetic drive")
    parser.add_argument("--seed", type=int, default=0, help="synthetic world seed")
    parser.add_argument("--checkpoint", default="",
                        help="SelaVPR weights (.pth or .safetensors): use SelaVPR instead of "
                             "the classical extractor")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (SelaVPR)")
    parser.add_argument("--images", help="real map images (folder); needs --queries")
    parser.add_argument("--queries", help="real query images (folder), same place order")
    parser.add_argument("--frame-tolerance", type=int, default=2,
                        help="real folders: a match within N frames is correct (default 2)")
    parser.add_argument("--rerank-k", type=int, default=10,
                        help="candidates re-ranked per query (default 10)")
    parser.add_argument("--rate", type=float, default=0.5,
                        help="live replay speed factor (default 0.5: half the recorded rate)")
    parser.add_argument("--no-live", action="store_true", help="skip the ROS 2 replay")
    parser.set_defaults(handler=run)


def _step(title: str, argv: list[str]) -> None:
    """Run one selavpr subcommand in this process, printing it as a user would type it."""
    from selavpr_ros.cli import main

    print(f"\n== {title}\n$ selavpr {shlex.join(argv)}", flush=True)
    status = main(argv)
    if status != 0:
        raise ConfigError(f"demo step '{title}' failed (exit status {status})")


def _isolate_dds() -> None:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))


def run(args: argparse.Namespace) -> int:
    if bool(args.images) != bool(args.queries):
        raise ConfigError("--images and --queries go together (map images and query images)")
    started = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    map_path = out / "map.selavpr"
    if map_path.exists():
        raise ConfigError(f"{map_path} exists: choose another --out or remove it")
    extractor = (["--checkpoint", args.checkpoint, "--device", args.device]
                 if args.checkpoint else ["--extractor", "classical"])
    common = ["--rerank-k", str(args.rerank_k), "--no-progress", *extractor]

    if args.images:
        queries_bag = out / "queries_bag"
        _step("build the map from the map images",
              ["build-map", str(map_path), "--images", args.images, "--min-distance", "0",
               "--no-progress", *extractor])
        _step("record the query images as a rosbag2 (a drive to replay)",
              ["make-bag", args.queries, str(queries_bag), "--rate", "2"])
        truth = ["--frame-tolerance", str(args.frame_tolerance)]
        offline_source = ["--images", args.queries]
    else:
        from selavpr_ros.synthetic import RouteConfig, write_route

        print(f"\n== render a synthetic route: 2 drives of {args.frames} frames (seed "
              f"{args.seed})", flush=True)
        written = write_route(RouteConfig(seed=args.seed, frames=args.frames), out / "route",
                              formats=("folder", "bag"))
        mapped, queries_bag = written["folder"][0], written["bag"][1]
        _step("build the map from drive 1",
              ["build-map", str(map_path), "--images", str(mapped), "--poses",
               str(mapped / "poses.csv"), "--min-distance", "0", "--no-progress", *extractor])
        truth = ["--radius", "5"]
        offline_source = ["--bag", str(queries_bag)]

    _step("answer every query frame offline and score it",
          ["evaluate", str(map_path), *offline_source, *truth, *common,
           "--out", str(out / "offline")])
    if not args.no_live:
        _isolate_dds()
        _step("replay the queries over ROS 2 through localizer_node and score its answers",
              ["evaluate", str(map_path), "--bag", str(queries_bag), "--live", "--rate",
               str(args.rate), *truth, *common, "--out", str(out / "live")])
    _summary(out, args.no_live, time.monotonic() - started)
    return 0


def _summary(out: Path, no_live: bool, seconds: float) -> None:
    offline = json.loads((out / "offline" / "evaluation.json").read_text())
    recall = offline["recall"]["after_rerank"]["recall"]
    evaluated = offline["recall"]["after_rerank"]["queries_evaluated"]
    print(f"\n== demo finished in {seconds:.0f} s")
    print(f"Recall over {evaluated} query frames (offline): " + ", ".join(
        f"R@{n} {100 * recall[str(n)]:.1f}%" for n in (1, 5, 10) if str(n) in recall))
    if not no_live:
        live = json.loads((out / "live" / "evaluation.json").read_text())
        info = live["live"]
        agreement = info.get("agreement", {})
        print(f"Live through localizer_node over ROS 2: {info['frames_answered']} of "
              f"{info['frames_sent']} frames answered "
              f"({info['node_counters'].get('frames_dropped', 0)} dropped as stale), "
              f"end-to-end latency p50 "
              f"{live['latency']['end_to_end_ms']['p50']:.0f} ms; same answers as offline for "
              f"{agreement.get('same_ranking', 0)} of {agreement.get('compared', 0)}")
    print(f"Reports and plots: {out / 'offline'}/summary.md"
          + ("" if no_live else f", {out / 'live'}/summary.md"))
