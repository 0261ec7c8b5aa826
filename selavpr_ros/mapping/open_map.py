"""Open a map to extend, or create a new one, with the extractor that belongs to it.

``selavpr build-map`` and ``map_builder_node`` both start here, so an existing map is always
extended with the extractor (and learned state) it records, checked against it, and closed
again if anything after opening fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor, extractor_for_map

if TYPE_CHECKING:
    import numpy as np

    from selavpr_ros.extractors.base import Extractor
    from selavpr_ros.map import PlaceMap
    from selavpr_ros.map.local_format import LocalFormat


def map_exists(path: Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def open_existing(path: Path, spec: ExtractorSpec) -> tuple[PlaceMap, Extractor]:
    """Open ``path`` writable with its own extractor (refused if ``spec`` contradicts it)."""
    from selavpr_ros.map import PlaceMap, check_extractor

    place_map = PlaceMap.open(path, writable=True)
    try:
        extractor = extractor_for_map(spec, place_map)
        check_extractor(place_map.extractor_info, extractor.info, Path(path))
    except BaseException:
        place_map.close()
        raise
    return place_map, extractor


def new_extractor(spec: ExtractorSpec,
                  fit_sample: Callable[[int], list[np.ndarray]] | None) -> Extractor:
    """Return the extractor of a new map (one with learned state fitted on ``fit_sample``)."""
    extractor = create_extractor(spec)
    if extractor.needs_fit:
        if fit_sample is None:
            raise ConfigError(
                f"extractor '{spec.kind or 'classical'}' learns its state from the route's "
                "images: build the map offline (selavpr build-map), then extend it")
        extractor = extractor.fit(fit_sample(extractor.fit_sample_size))
    return extractor


def codec_state_from(source: Path, local_format: LocalFormat) -> dict[str, np.ndarray]:
    """Return the local codec state (PCA projection) of map ``source`` to reuse in a new map.

    Maps that are to be merged must share it; ``source`` must store ``local_format``.
    """
    from selavpr_ros.map import PlaceMap

    with PlaceMap.open(source) as place_map:
        if place_map.local_format != local_format:
            raise ConfigError(f"--local-codec-from {source} has local format "
                              f"{place_map.local_format.name}, not {local_format.name}")
        return place_map.codec.state()


def open_or_create(path: Path, spec: ExtractorSpec, *, append: bool, index: str,
                   map_frame: str,
                   fit_sample: Callable[[int], list[np.ndarray]] | None = None,
                   local_format: LocalFormat | None = None,
                   local_codec_from: Path | None = None,
                   ) -> tuple[PlaceMap, Extractor]:
    """Return the map at ``path`` to write into and its extractor.

    An existing map is extended only with ``append`` (its own index and local format are
    kept); a new one is created in ``map_frame`` with a ``index`` faiss index ("auto": flat
    until the caller tunes it when the build ends), local features stored as
    ``local_format`` (default fp16) and, with ``local_codec_from``, that map's PCA projection.
    """
    from selavpr_ros.map import IndexSpec, PlaceMap
    from selavpr_ros.map.index import IndexKind

    if map_exists(path):
        if not append:
            raise MapFormatError(f"map {path} exists; pass --append to extend it")
        return open_existing(path, spec)
    codec_state = None
    if local_codec_from is not None and local_format is not None:
        codec_state = codec_state_from(local_codec_from, local_format)
    extractor = new_extractor(spec, fit_sample)
    kind = cast("IndexKind", "flat" if index == "auto" else index)  # IndexSpec checks it
    place_map = PlaceMap.create(path, extractor, index=IndexSpec(kind=kind),
                                map_frame=map_frame or "map", local_format=local_format,
                                local_codec_state=codec_state)
    return place_map, extractor
