"""The extractor options every ``selavpr`` subcommand shares, and the spec they make."""

from __future__ import annotations

import argparse

from selavpr_ros.extractors.factory import EXTRACTOR_KINDS, PRECISIONS, ExtractorSpec


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --extractor/--checkpoint/--device/--precision/--batch-size to a subcommand."""
    group = parser.add_argument_group("extractor")
    group.add_argument("--extractor", default="", choices=("", *EXTRACTOR_KINDS),
                       help="feature extractor (default: the one recorded in the map; "
                            "selavpr for a new map); refused if the map records another")
    group.add_argument("--checkpoint", default="",
                       help="SelaVPR weights: official .pth or converted .safetensors")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="inference precision (default: fp32)")
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    group.add_argument("--vocabulary-size", type=int, default=0,
                       help="classical: VLAD words learned when building a map (0 = default)")


def spec_from_args(args: argparse.Namespace) -> ExtractorSpec:
    """Return the :class:`ExtractorSpec` given by :func:`add_extractor_arguments` options."""
    return ExtractorSpec(kind=args.extractor, checkpoint=args.checkpoint, device=args.device,
                         precision=args.precision, batch_size=args.batch_size,
                         vocabulary_size=getattr(args, "vocabulary_size", 0))
