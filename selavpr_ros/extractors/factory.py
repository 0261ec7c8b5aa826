"""Choose and build an extractor from a small spec (command-line options or node parameters).

The command line, the nodes and the evaluation all build their extractor here, so a map built
offline and a node answering queries get the same extractor from the same settings. Extractors
with data-dependent state (a vocabulary learned from the map's images) are restored from the
map they belong to, hence the optional ``place_map`` argument.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from selavpr_ros.errors import ConfigError

if TYPE_CHECKING:
    from selavpr_ros.extractors.base import Extractor
    from selavpr_ros.map import PlaceMap

log = logging.getLogger(__name__)

EXTRACTOR_KINDS: tuple[str, ...] = ("selavpr", "classical")
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
        vocabulary_size: classical extractor only: VLAD visual words learned when a map is
            built (0 = the extractor's default); a map's own vocabulary always wins.
    """

    kind: str = "selavpr"
    checkpoint: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 16
    vocabulary_size: int = 0

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
        if self.vocabulary_size < 0:
            raise ConfigError(f"vocabulary_size must be >= 0, got {self.vocabulary_size}")


def create_extractor(spec: ExtractorSpec, place_map: PlaceMap | None = None) -> Extractor:
    """Build the extractor described by ``spec`` (restoring map-held state from ``place_map``).

    The classical extractor comes back fitted from ``place_map``'s stored vocabulary, or
    unfitted (``needs_fit``) without a map: a map builder then fits it on the route's images
    before creating the map (see :class:`selavpr_ros.extractors.base.Extractor`).

    Raises:
        MapFormatError: ``place_map`` holds no classical extractor state.
    """
    if spec.kind == "selavpr":
        from selavpr_ros.extractors.selavpr import SelaVPRExtractor

        return SelaVPRExtractor.from_checkpoint(
            spec.checkpoint, device=spec.device, precision=spec.precision,
            batch_size=spec.batch_size)
    if spec.kind == "classical":
        return _classical(spec, place_map)
    raise ConfigError(f"unknown extractor '{spec.kind}'")  # unreachable: checked in the spec


def _classical(spec: ExtractorSpec, place_map: PlaceMap | None) -> Extractor:
    from selavpr_ros.errors import MapFormatError
    from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor

    if place_map is None:
        config = ClassicalConfig()
        if spec.vocabulary_size:
            config = ClassicalConfig(vocabulary_size=spec.vocabulary_size)
        return ClassicalExtractor(config)
    state = place_map.extractor_state()
    if not state:
        raise MapFormatError(
            f"map {place_map.path} was built by {place_map.extractor_info.describe()}, not by "
            "the classical extractor (it holds no vocabulary)"
        )
    try:
        extractor = ClassicalExtractor.from_state(state)
    except ConfigError as err:
        raise MapFormatError(f"map {place_map.path}: {err}") from err
    if spec.vocabulary_size and spec.vocabulary_size != extractor.config.vocabulary_size:
        log.warning("map %s has a %d-word vocabulary; --vocabulary-size %d is ignored",
                    place_map.path, extractor.config.vocabulary_size, spec.vocabulary_size)
    return extractor


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
    group.add_argument("--vocabulary-size", type=int, default=0,
                       help="classical: VLAD words learned when building a map (0 = default)")


def spec_from_args(args: argparse.Namespace) -> ExtractorSpec:
    """The :class:`ExtractorSpec` given by :func:`add_extractor_arguments` options."""
    return ExtractorSpec(kind=args.extractor, checkpoint=args.checkpoint, device=args.device,
                         precision=args.precision, batch_size=args.batch_size,
                         vocabulary_size=getattr(args, "vocabulary_size", 0))
