"""Choose and build an extractor from a small spec (command-line options or node parameters).

The command line, the nodes and the evaluation all build their extractor here, so a map built
offline and a node answering queries get the same extractor from the same settings. A map is
self-describing: it records the extractor that built it (:class:`ExtractorInfo`) and, for
extractors with learned state, that state; a spec without a kind takes the map's, and a spec
that names another kind is refused. The factory takes that record and state, never the map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from selavpr_ros.errors import ConfigError, MapFormatError

if TYPE_CHECKING:
    from selavpr_ros.extractors.base import Extractor, ExtractorInfo

log = logging.getLogger(__name__)

EXTRACTOR_KINDS: tuple[str, ...] = ("selavpr", "classical")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
DEFAULT_KIND = "selavpr"  # for a new map when no kind is given


@dataclass(frozen=True)
class ExtractorSpec:
    """Which extractor to run and where.

    Attributes:
        kind: extractor family, one of :data:`EXTRACTOR_KINDS`, or "" for the one recorded in
            the map (:data:`DEFAULT_KIND` for a new map).
        checkpoint: SelaVPR weights: an official ``.pth`` checkpoint or a converted
            ``.safetensors`` file (the network configuration is read from it).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``; ``fp16``/``bf16`` autocast on CUDA (``bf16`` also on CPU).
        batch_size: images per forward pass when extracting many images.
        vocabulary_size: classical extractor only: VLAD visual words learned when a map is
            built (0 = the extractor's default); a map's own vocabulary always wins.
    """

    kind: str = ""
    checkpoint: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    batch_size: int = 16
    vocabulary_size: int = 0

    def __post_init__(self) -> None:
        if self.kind and self.kind not in EXTRACTOR_KINDS:
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


def recorded_kind(info: ExtractorInfo) -> str:
    """Return the extractor family a map records (its extractor name starts with it)."""
    from selavpr_ros.extractors.classical import NAME_PREFIX

    return "classical" if info.name.startswith(NAME_PREFIX) else "selavpr"


def resolve(spec: ExtractorSpec, recorded: ExtractorInfo | None, where: Any = "") -> ExtractorSpec:
    """``spec`` with its kind filled in from the map's record; refused when it contradicts it."""
    if recorded is None:
        return spec if spec.kind else replace(spec, kind=DEFAULT_KIND)
    kind = recorded_kind(recorded)
    if spec.kind and spec.kind != kind:
        raise ConfigError(
            f"map {where} was built by the {kind} extractor ({recorded.describe()}), not by "
            f"'{spec.kind}': leave the extractor unset to use the map's")
    if kind == "selavpr" and not spec.checkpoint:
        raise ConfigError(
            f"map {where} was built by {recorded.describe()}: give its checkpoint file")
    return replace(spec, kind=kind)


def create_extractor(spec: ExtractorSpec, recorded: ExtractorInfo | None = None,
                     state: Mapping[str, Any] | None = None, where: Any = "") -> Extractor:
    """Build the extractor described by ``spec`` for a map that records ``recorded``/``state``.

    Without a record (a new map) the classical extractor comes back unfitted (``needs_fit``): a
    map builder then fits it on the route's images before creating the map (see
    :class:`selavpr_ros.extractors.base.Extractor`); with one it is restored from ``state``.

    Raises:
        ConfigError: the spec contradicts the record, or lacks what the kind needs.
        MapFormatError: the record says classical but ``state`` holds no vocabulary.
    """
    spec = resolve(spec, recorded, where)
    if spec.kind == "selavpr":
        from selavpr_ros.extractors.selavpr import SelaVPRExtractor

        return SelaVPRExtractor.from_checkpoint(
            spec.checkpoint, device=spec.device, precision=spec.precision,
            batch_size=spec.batch_size)
    return _classical(spec, recorded, state, where)


def _classical(spec: ExtractorSpec, recorded: ExtractorInfo | None,
               state: Mapping[str, Any] | None, where: Any) -> Extractor:
    from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor

    if recorded is None:
        config = ClassicalConfig()
        if spec.vocabulary_size:
            config = ClassicalConfig(vocabulary_size=spec.vocabulary_size)
        return ClassicalExtractor(config)
    if not state:
        raise MapFormatError(
            f"map {where} was built by {recorded.describe()} but holds no vocabulary")
    try:
        extractor = ClassicalExtractor.from_state(dict(state))
    except ConfigError as err:
        raise MapFormatError(f"map {where}: {err}") from err
    if spec.vocabulary_size and spec.vocabulary_size != extractor.config.vocabulary_size:
        log.warning("map %s has a %d-word vocabulary; --vocabulary-size %d is ignored",
                    where, extractor.config.vocabulary_size, spec.vocabulary_size)
    return extractor


def extractor_for_map(spec: ExtractorSpec, place_map: Any) -> Extractor:
    """Return the extractor that queries or extends ``place_map`` (its record and state)."""
    info = place_map.extractor_info
    state = place_map.extractor_state() if recorded_kind(info) == "classical" else None
    return create_extractor(spec, info, state, where=place_map.path)
