"""Choose and build an extractor from a small spec (command-line options or node parameters).

The command line, the nodes and the evaluation all build their extractor here, so a map built
offline and a node answering queries get the same extractor from the same settings. Extractors
with data-dependent state (a vocabulary learned from the map's images) are restored from the
map they belong to, hence the optional ``place_map`` argument.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from selavpr_ros.errors import ConfigError

if TYPE_CHECKING:
    from selavpr_ros.extractor import Extractor
    from selavpr_ros.map import PlaceMap

EXTRACTOR_KINDS: tuple[str, ...] = ("selavpr",)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ExtractorSpec:
    """Which extractor to run and where.

    Attributes:
        kind: extractor family, one of :data:`EXTRACTOR_KINDS`.
        checkpoint: SelaVPR weights: an official ``.pth`` checkpoint or a converted
            ``.safetensors`` file (the network configuration is read from it).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``; ``fp16``/``bf16`` autocast on CUDA (``bf16`` also on CPU).
        batch_size: images per forward pass when extracting many images.
    """

    kind: str = "selavpr"
    checkpoint: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.kind not in EXTRACTOR_KINDS:
            known = ", ".join(EXTRACTOR_KINDS)
            raise ConfigError(f"unknown extractor '{self.kind}' (known: {known})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got '{self.precision}'")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.kind == "selavpr" and not self.checkpoint:
            raise ConfigError("the selavpr extractor needs a checkpoint file (--checkpoint)")


def create_extractor(spec: ExtractorSpec, place_map: PlaceMap | None = None) -> Extractor:
    """Build the extractor described by ``spec`` (restoring map-held state from ``place_map``)."""
    if spec.kind == "selavpr":
        from selavpr_ros.extractors.selavpr import SelaVPRExtractor

        return SelaVPRExtractor.from_checkpoint(
            spec.checkpoint, device=spec.device, precision=spec.precision,
            batch_size=spec.batch_size)
    raise ConfigError(f"unknown extractor '{spec.kind}'")  # unreachable: checked in the spec


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --extractor/--checkpoint/--device/--precision/--batch-size to a subcommand."""
    group = parser.add_argument_group("extractor")
    group.add_argument("--extractor", default="selavpr", choices=EXTRACTOR_KINDS,
                       help="feature extractor (default: selavpr)")
    group.add_argument("--checkpoint", default="",
                       help="SelaVPR weights: official .pth or converted .safetensors")
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--precision", default="fp32", choices=PRECISIONS,
                       help="inference precision (default: fp32)")
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass")


def spec_from_args(args: argparse.Namespace) -> ExtractorSpec:
    """The :class:`ExtractorSpec` given by :func:`add_extractor_arguments` options."""
    return ExtractorSpec(kind=args.extractor, checkpoint=args.checkpoint, device=args.device,
                         precision=args.precision, batch_size=args.batch_size)
