"""The run's keyframes in memory: a flat inner-product index and growing feature arrays.

Insertion is amortised O(1) whatever the run's length: the faiss flat index appends one row,
and local features go into arrays whose capacity doubles. Keyframes arrive in time order, so
the keyframes outside the exclusion window (old enough AND far enough along the trajectory)
are always a prefix of the ids, searched with an id-range selector.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import Extractor, ExtractorInfo, Features
from selavpr_ros.map import PlaceInfo, PlaceMap

if TYPE_CHECKING:
    from selavpr_ros.geometry.camera import CameraModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keyframe:
    """A keyframe of the run: stamp, odometry pose and distance travelled up to it."""

    id: int
    stamp_ns: int
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float] | None
    path_m: float
    frame_id: str = ""


class _Growing:
    """A numpy array whose first axis grows with capacity doubling."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self._data = np.empty((16, *shape), dtype)
        self.count = 0

    def append(self, row: np.ndarray | float) -> None:
        if self.count == len(self._data):
            bigger = np.empty((2 * len(self._data), *self._data.shape[1:]), self._data.dtype)
            bigger[: self.count] = self._data[: self.count]
            self._data = bigger
        self._data[self.count] = row
        self.count += 1

    @property
    def view(self) -> np.ndarray:
        return self._data[: self.count]


class RunDatabase:
    """Keyframes of the current run, searchable while the run grows."""

    def __init__(self, info: ExtractorInfo, local_dtype: str = "float16") -> None:
        self.info = info
        self.index = faiss.IndexFlatIP(info.global_dim)
        shape = (info.local_count, info.local_dim)
        self._local = _Growing(shape, np.dtype(local_dtype))
        self._mask = _Growing((info.local_count,), np.bool_)
        self._keypoints = _Growing((info.local_count, 2), np.float32)
        self._stamps = _Growing((), np.int64)
        self._paths = _Growing((), np.float64)
        self._points: _Growing | None = None  # created with the first keyframe with depth
        self.keyframes: list[Keyframe] = []

    def __len__(self) -> int:
        return len(self.keyframes)

    def add(self, features: Features, stamp_ns: int, position: tuple[float, float, float],
            orientation: tuple[float, float, float, float] | None, path_m: float,
            frame_id: str = "", points: np.ndarray | None = None) -> Keyframe:
        """Insert one keyframe (batch-of-one features); stamps must not decrease.

        ``points``: (L, 3) optical-frame points of its local features from depth (NaN: none).
        """
        if len(features) != 1:
            raise ValueError(f"add takes one keyframe's features, got {len(features)}")
        if self.keyframes and stamp_ns < self.keyframes[-1].stamp_ns:
            raise ValueError(f"keyframe stamp {stamp_ns} is older than the last keyframe's "
                             f"{self.keyframes[-1].stamp_ns}")
        features.check_against(self.info)
        g = np.ascontiguousarray(features.global_desc, dtype=np.float32)
        self.index.add(g)
        self._local.append(features.local[0])
        mask = features.local_mask
        self._mask.append(np.ones(self.info.local_count, np.bool_) if mask is None else mask[0])
        kp = features.keypoints
        self._keypoints.append(np.zeros((self.info.local_count, 2), np.float32)
                               if kp is None else kp[0])
        self._stamps.append(stamp_ns)
        self._paths.append(path_m)
        if points is not None and self._points is None:
            self._points = _Growing((self.info.local_count, 3), np.float16)
            for _ in range(len(self.keyframes)):
                self._points.append(np.nan)
        if self._points is not None:
            self._points.append(np.nan if points is None else
                                np.asarray(points, np.float32).reshape(-1, 3))
        kf = Keyframe(len(self.keyframes), int(stamp_ns), tuple(map(float, position)),  # type: ignore[arg-type]
                      None if orientation is None else tuple(map(float, orientation)),  # type: ignore[arg-type]
                      float(path_m), frame_id)
        self.keyframes.append(kf)
        return kf

    def eligible(self, stamp_ns: int, path_m: float, min_age_s: float, min_path_m: float) -> int:
        """How many keyframes (a prefix) are old enough and far enough along the trajectory."""
        by_age = np.searchsorted(self._stamps.view, stamp_ns - round(min_age_s * 1e9), "right")
        by_path = np.searchsorted(self._paths.view, path_m - min_path_m + 1e-9, "right")
        return int(min(by_age, by_path))

    def search(self, query: np.ndarray, k: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of keyframes ``[0, limit)`` by cosine: (ids, similarities)."""
        k = min(k, limit)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        params = faiss.SearchParameters()
        params.sel = faiss.IDSelectorRange(0, limit)
        sims, ids = self.index.search(np.ascontiguousarray(query.reshape(1, -1), np.float32), k,
                                      params=params)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), sims[0][keep]

    def local(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._local.view[ids], self._mask.view[ids]

    @property
    def paths(self) -> np.ndarray:
        """Distance travelled (m) at each keyframe, non-decreasing with the id."""
        return self._paths.view

    def points(self, ids: np.ndarray) -> np.ndarray | None:
        """(N, L, 3) float32 depth points of keyframes ``ids``, or None: no depth in the run."""
        if self._points is None:
            return None
        return self._points.view[ids].astype(np.float32)

    def keypoints(self, i: int) -> np.ndarray:
        return self._keypoints.view[i]

    def features(self) -> Features:
        """All keyframes' features (as a map stores them)."""
        info = self.info
        return Features(
            global_desc=self.index.reconstruct_n(0, self.index.ntotal).reshape(
                -1, info.global_dim),  # the index holds the only copy
            local=self._local.view.copy(),
            local_mask=self._mask.view.copy(),
            keypoints=self._keypoints.view.copy() if info.has_keypoints else None,
        )

    def save(self, path: str | Path, extractor: Extractor, source: str = "loop_closure",
             map_frame: str = "odom", camera: CameraModel | None = None) -> int:
        """Write the keyframes as a place map at ``path``, replacing one that is there.

        The map is written beside ``path`` and renamed into place, so an interrupted save
        leaves the previous map. Returns the number of places.
        """
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        old = path.with_name(path.name + ".old")
        for stale in (partial, old):
            if stale.exists():
                shutil.rmtree(stale)
        if path.exists() and not (path / "manifest.json").exists() and any(path.iterdir()):
            raise MapFormatError(f"cannot save the run to {path}: it exists and is not a map")
        place_map = PlaceMap.create(partial, extractor, map_frame=map_frame,
                                    local_dtype=str(self._local.view.dtype), camera=camera)
        try:
            places = [PlaceInfo(stamp_ns=kf.stamp_ns, frame_id=kf.frame_id,
                                position=kf.position, orientation=kf.orientation,
                                source=source, source_ref=str(kf.id))
                      for kf in self.keyframes]
            if places:
                place_map.append(self.features(), places,
                                 None if self._points is None else self._points.view.copy())
        finally:
            place_map.close()
        if path.exists():
            path.rename(old)
        partial.rename(path)
        if old.exists():
            shutil.rmtree(old)
        return len(places)


class PriorMap:
    """A map of an earlier run, queried without exclusion window; loops marked with its id."""

    def __init__(self, place_map: PlaceMap) -> None:
        self.map = place_map
        self.map_id = place_map.map_id
        place_map.load_index()
        self.positions: list[tuple[float, float, float] | None] = []
        self.stamps: list[int] = []
        paths, total, last = [], 0.0, None
        count = place_map.count
        for start in range(0, count, 5000):
            for p in place_map.places(range(start, min(start + 5000, count))):
                if p.position is not None and last is not None:
                    total += math.dist(p.position, last)
                last = p.position if p.position is not None else last
                paths.append(total)
                self.positions.append(p.position)
                self.stamps.append(p.stamp_ns)
        self.paths = np.asarray(paths, np.float64)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        found = self.map.search(query.reshape(1, -1), k)
        keep = found.ids[0] >= 0
        return found.ids[0][keep], found.similarities[0][keep]

    def local(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self.map.features(ids)
        mask = f.local_mask if f.local_mask is not None else np.ones(f.local.shape[:2], bool)
        return f.local, mask
