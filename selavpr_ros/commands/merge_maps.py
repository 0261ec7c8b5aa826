"""``selavpr merge-maps OUT IN1 IN2 ...``: join maps of separate drives into one map."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-maps",
        help="join place maps of the same extractor and frame into a new map",
        description=(
            "Join maps built separately (e.g. drives processed on several machines) into a "
            "new map OUT: places in input order with ids renumbered, metadata kept, the "
            "provenance of each id range recorded, the index rebuilt. The inputs must share "
            "extractor, weights fingerprint, map frame and local format. Atomic: OUT appears "
            "complete or not at all."
        ),
    )
    parser.add_argument("out", metavar="OUT", help="new map directory (must not exist)")
    parser.add_argument("inputs", metavar="IN", nargs="+", help="maps to join, in order")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.map.merge import merge_maps

    summary = merge_maps(args.out, args.inputs, progress=not args.no_progress)
    if args.json:
        print(json.dumps({"path": str(summary.path), "places": summary.places,
                          "inputs": [{"path": p, "places": n} for p, n in summary.inputs],
                          "index": summary.index_kind, "seconds": summary.seconds}))
        return 0
    for path, count in summary.inputs:
        print(f"input  {path}: {count} places")
    print(f"merged {summary.path}: {summary.places} places, {summary.index_kind} index, "
          f"{summary.seconds:.1f} s")
    return 0
