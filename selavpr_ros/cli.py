"""The ``selavpr`` command line: one entry point for the offline tools."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from selavpr_ros import __version__
from selavpr_ros.errors import SelaVPRError

# Subcommand modules under selavpr_ros.commands, in the order --help lists them.
COMMANDS: tuple[str, ...] = ("demo", "build_map", "map_info", "merge_maps", "evaluate",
                             "evaluate_loops", "replay", "make_bag", "make_revisit",
                             "convert_checkpoint", "train")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="selavpr",
        description="SelaVPR visual place recognition: build maps, localise, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"selavpr_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"selavpr_ros.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors the user can fix are printed in one line, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # faiss reports which CPU build it loaded at INFO level
        logging.getLogger("faiss").setLevel(logging.WARNING)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return int(handler(args) or 0)
    except SelaVPRError as err:
        print(f"selavpr: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selavpr: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
