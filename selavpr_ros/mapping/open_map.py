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


def open_or_create(path: Path, spec: ExtractorSpec, *, append: bool, index: str,
                   map_frame: str,
                   fit_sample: Callable[[int], list[np.ndarray]] | None = None,
                   ) -> tuple[PlaceMap, Extractor]:
    """Return the map at ``path`` to write into and its extractor.

    An existing map is extended only with ``append``; a new one is created in ``map_frame``
    with a ``index`` faiss index.
    """
    from selavpr_ros.map import IndexSpec, PlaceMap
    from selavpr_ros.map.index import IndexKind

    if map_exists(path):
        if not append:
            raise MapFormatError(f"map {path} exists; pass --append to extend it")
        return open_existing(path, spec)
    extractor = new_extractor(spec, fit_sample)
    kind = cast("IndexKind", index)  # IndexSpec checks it at runtime
    place_map = PlaceMap.create(path, extractor, index=IndexSpec(kind=kind),
                                map_frame=map_frame or "map")
    return place_map, extractor
