"""Building a place map from a stream of frames: keyframes, batched extraction, commits.

One :class:`MapBuilder` serves the ``selavpr build-map`` command (bags and image folders) and
the live ``map_builder_node``, so the same frames make the same map whichever way they arrive.

For every frame: no pose -> skipped; not a keyframe -> skipped; pixels cannot be decoded ->
logged and skipped (never fatal); otherwise it is queued, extracted in batches, and appended to
the map in one atomic commit every ``commit_every`` places. A crash or Ctrl-C loses at most the
places since the last commit, and the map on disk stays the last complete state. Re-running
over the same source with the same map resumes: frames of that source up to its last place in
the map (in source order: message index, natural file-name order, stamp) are skipped, and the
keyframe rule continues from that place, so the result equals an uninterrupted build.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selavpr_ros.errors import CheckpointError, ConfigError, ImageDecodeError, MapFormatError
from selavpr_ros.extractors.base import Extractor, Features
from selavpr_ros.geometry.depth import DepthImageError, feature_points
from selavpr_ros.geometry.pixels import feature_pixels
from selavpr_ros.io.folders import natural_key
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.poses import Pose
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.mapping.keyframes import KeyframeConfig, KeyframeSelector

log = logging.getLogger(__name__)

NO_POSE = "no_pose"
NOT_KEYFRAME = "not_keyframe"
UNDECODABLE = "undecodable"
ALREADY_IN_MAP = "already_in_map"
SKIP_REASONS: tuple[str, ...] = (NO_POSE, NOT_KEYFRAME, UNDECODABLE, ALREADY_IN_MAP)


@dataclass(frozen=True)
class BuildConfig:
    """How frames become places.

    Attributes:
        keyframes: the keyframe rule.
        batch_size: images per extractor call.
        commit_every: places per atomic commit (what a crash can lose at most).
    """

    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    batch_size: int = 16
    commit_every: int = 100

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.commit_every < 1:
            raise ConfigError(f"commit_every must be at least 1, got {self.commit_every}")


@dataclass
class BuildSummary:
    """What a build did; printed at the end of ``selavpr build-map``."""

    map_path: str
    places_added: int = 0
    map_places: int = 0
    frames_read: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    bytes_on_disk: int = 0
    seconds: float = 0.0
    extract_seconds: float = 0.0
    interrupted: bool = False
    places_with_depth: int = 0  # places stored with 3-D points
    depth_failures: int = 0  # places whose depth could not be used (logged, stored without)

    @property
    def images_per_s(self) -> float:
        """Places (extracted images) per second of the whole build."""
        return self.places_added / self.seconds if self.seconds > 0 else 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "map": self.map_path,
            "places_added": self.places_added,
            "map_places": self.map_places,
            "frames_read": self.frames_read,
            "skipped": dict(self.skipped),
            "bytes_on_disk": self.bytes_on_disk,
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            "images_per_s": round(self.images_per_s, 2),
            "frames_per_s": round(self.frames_per_s, 2),
            "interrupted": self.interrupted,
            "places_with_depth": self.places_with_depth,
            "depth_failures": self.depth_failures,
        }

    def lines(self) -> list[str]:
        skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.skipped.items() if v)
        state = "interrupted; " if self.interrupted else ""
        return [
            f"{state}map {self.map_path}: {self.places_added} places added, "
            f"{self.map_places} in total",
            f"frames read {self.frames_read}, skipped {sum(self.skipped.values())}"
            + (f" ({skipped})" if skipped else ""),
            f"size on disk {format_bytes(self.bytes_on_disk)}, time {self.seconds:.1f} s, "
            f"{self.images_per_s:.1f} images/s extracted, {self.frames_per_s:.1f} frames/s read",
        ] + ([f"places with depth {self.places_with_depth}, without (depth unusable) "
              f"{self.depth_failures}"] if self.places_with_depth or self.depth_failures else [])


def format_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{size} B"


def directory_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.is_file())


class MapBuilder:
    """Turns frames into places of an open, writable :class:`PlaceMap`.

    Not thread-safe: one thread calls :meth:`add`, :meth:`extract_pending` and :meth:`commit`.
    """

    def __init__(self, place_map: PlaceMap, extractor: Extractor, config: BuildConfig) -> None:
        if not place_map.writable:
            raise ConfigError(f"map {place_map.path} must be open for writing")
        self.map = place_map
        self.extractor = extractor
        self.config = config
        self.summary = BuildSummary(str(place_map.path), map_places=place_map.count)
        self._selectors: dict[str, KeyframeSelector] = {}
        self._resume_after: dict[str, list[object] | None] = {}
        # decoded, not yet extracted: pixels, place, depth (image, encoding) or None
        self._queued: list[tuple[np.ndarray, PlaceInfo, tuple[np.ndarray, str] | None]] = []
        self._features: list[Features] = []  # extracted, not yet committed
        self._places: list[PlaceInfo] = []
        self._points: list[np.ndarray | None] = []  # per pending place: (L, 3) or None
        self.camera = place_map.camera
        self._said_no_camera = False
        self._start = time.monotonic()

    # ------------------------------------------------------------------ feeding
    def _selector(self, source: str) -> KeyframeSelector:
        selector = self._selectors.get(source)
        if selector is None:
            last_ref, last = self._last_place(source)
            self._resume_after[source] = None if last_ref is None else natural_key(last_ref)
            selector = KeyframeSelector(self.config.keyframes, last)
            self._selectors[source] = selector
            if last_ref is not None:
                log.info("%s is already in the map up to %s; resuming after it", source,
                         last_ref)
        return selector

    def _last_place(self, source: str) -> tuple[str | None, Pose | None]:
        """Return the source reference and pose of the source's last place in the map."""
        last_ref: str | None = None
        last: Pose | None = None
        count = self.map.count
        for start in range(0, count, 5000):
            for place in self.map.places(range(start, min(start + 5000, count))):
                if place.source == source:
                    last_ref = place.source_ref
                    last = None
                    if place.position is not None:
                        last = Pose(place.stamp_ns, place.position, place.orientation)
        return last_ref, last

    def add(self, frame: Frame) -> str | None:
        """Consider one frame; return None when it became a place, else the skip reason."""
        self.summary.frames_read += 1
        reason = self._consider(frame)
        if reason is not None:
            self.summary.skipped[reason] += 1
        return reason

    def _consider(self, frame: Frame) -> str | None:
        selector = self._selector(frame.source)
        resume_after = self._resume_after[frame.source]
        if resume_after is not None and natural_key(frame.source_ref) <= resume_after:
            return ALREADY_IN_MAP
        if frame.damaged:
            log.warning("%s %s: skipping a corrupt message: %s", frame.source, frame.source_ref,
                        frame.damaged)
            return UNDECODABLE
        pose = frame.pose
        if pose is None:
            return NO_POSE
        if not selector.is_keyframe(pose):
            return NOT_KEYFRAME
        try:
            rgb = frame.load()
        except ImageDecodeError as err:
            log.warning("%s %s: skipping undecodable image: %s", frame.source, frame.source_ref,
                        err)
            return UNDECODABLE
        if self.camera is not None and rgb.shape[:2] != (self.camera.height, self.camera.width):
            raise ConfigError(
                f"the map's camera model is {self.camera.width}x{self.camera.height} but "
                f"{frame.source} {frame.source_ref} is {rgb.shape[1]}x{rgb.shape[0]}")
        depth = self._depth(frame)
        selector.accept(pose)
        info = PlaceInfo(
            stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id,
            position=pose.position,
            orientation=pose.orientation,
            source=frame.source,
            source_ref=frame.source_ref,
        )
        self._queued.append((rgb, info, depth))
        # extract a full batch, or early so that commits hold exactly commit_every places
        if len(self._queued) >= self.config.batch_size or self.pending >= self.config.commit_every:
            self.extract_pending()
        if len(self._places) >= self.config.commit_every:
            self.commit()
        return None

    def _depth(self, frame: Frame) -> tuple[np.ndarray, str] | None:
        """Read the frame's depth image; None without one, a camera model, or when unreadable."""
        if frame.depth is None:
            return None
        if self.camera is None:
            if not self._said_no_camera:
                self._said_no_camera = True
                log.warning("depth is ignored: the map has no camera model (give camera info)")
            return None
        try:
            return frame.depth()
        except DepthImageError as err:
            self.summary.depth_failures += 1
            log.warning("%s %s: stored without depth: %s", frame.source, frame.source_ref, err)
            return None

    def _feature_points(self, features: Features, row: int, rgb: np.ndarray,
                        depth: tuple[np.ndarray, str] | None, info: PlaceInfo,
                        ) -> np.ndarray | None:
        if depth is None or self.camera is None:
            return None
        keypoints = None if features.keypoints is None else features.keypoints[row]
        pixels = feature_pixels(self.map.extractor_info, rgb.shape[:2], keypoints=keypoints)
        try:
            points = feature_points(depth[0], depth[1], pixels, self.camera)
        except DepthImageError as err:
            self.summary.depth_failures += 1
            log.warning("%s %s: stored without depth: %s", info.source, info.source_ref, err)
            return None
        self.summary.places_with_depth += 1
        return points

    # ------------------------------------------------------------------ extraction, commits
    @property
    def pending(self) -> int:
        """Places selected but not yet committed."""
        return len(self._queued) + len(self._places)

    def extract_pending(self) -> None:
        """Extract the features of every queued image (in batches)."""
        # a compact map encodes at commit; until then fp16 is what it can lose least to
        local_dtype = "float32" if self.map.manifest.local_dtype == "float32" else "float16"
        while self._queued:
            batch = self._queued[: self.config.batch_size]
            t0 = time.monotonic()
            features = self.extractor.extract([rgb for rgb, _, _ in batch])
            self.summary.extract_seconds += time.monotonic() - t0
            if not np.isfinite(features.global_desc).all():
                raise CheckpointError(
                    f"extractor {self.extractor.info.describe()} produced NaN or infinite "
                    f"descriptors for {batch[0][1].source} {batch[0][1].source_ref}: its "
                    "weights are damaged (non-finite values in the checkpoint?)"
                )
            # keep what the map will store, not float32 copies of ~1 MB per place
            features = Features(
                global_desc=features.global_desc,
                local=features.local.astype(local_dtype, copy=False),
                local_mask=features.local_mask,
                keypoints=features.keypoints,
            )
            self._features.append(features)
            self._places.extend(info for _, info, _ in batch)
            self._points.extend(self._feature_points(features, row, rgb, depth, info)
                                for row, (rgb, info, depth) in enumerate(batch))
            del self._queued[: len(batch)]

    def commit(self) -> int:
        """Extract what is queued and append every pending place in one atomic commit."""
        self.extract_pending()
        if not self._places:
            return 0
        features = _concatenate(self._features)
        points = None
        if any(p is not None for p in self._points):
            info = self.map.extractor_info
            points = np.full((len(self._places), info.local_count, 3), np.nan, np.float16)
            for row, p in enumerate(self._points):
                if p is not None:
                    points[row] = p
        try:
            ids = self.map.append(features, self._places, points=points)
        except (OSError, sqlite3.Error, ValueError, OverflowError) as err:
            # the places stay pending: a caller may retry; the map keeps its last commit
            raise MapFormatError(
                f"commit of {len(self._places)} places to {self.map.path} failed: {err}; "
                f"the map keeps its last commit ({self.map.count} places)"
            ) from err
        added = len(ids)
        self._features, self._places, self._points = [], [], []
        self.summary.places_added += added
        self.summary.map_places = self.map.count
        log.info("committed %d places to %s (%d in total)", added, self.map.path, self.map.count)
        return added

    def finish(self, *, interrupted: bool = False) -> BuildSummary:
        """Commit what is pending (unless interrupted) and return the summary."""
        if not interrupted:
            self.commit()
        s = self.summary
        s.interrupted = interrupted
        s.map_places = self.map.count
        s.seconds = time.monotonic() - self._start
        s.bytes_on_disk = directory_size(self.map.path)
        return s


def _concatenate(parts: list[Features]) -> Features:
    if len(parts) == 1:
        return parts[0]

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays)

    return Features(
        global_desc=np.concatenate([p.global_desc for p in parts]),
        local=np.concatenate([p.local for p in parts]),
        local_mask=cat("local_mask"),
        keypoints=cat("keypoints"),
    )


def build(
    frames: Iterable[Frame],
    builder: MapBuilder,
    *,
    progress: bool = False,
    total: int | None = None,
) -> BuildSummary:
    """Feed ``frames`` to ``builder`` with a tqdm progress bar; Ctrl-C ends it cleanly.

    On Ctrl-C the places since the last commit are dropped (the map keeps its last commit) and
    the summary says ``interrupted``; re-running with the same map resumes.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True)
    try:
        for frame in frames:
            builder.add(frame)
            bar.update(1)
            if bar.n % 10 == 0:
                bar.set_postfix(places=builder.map.count + builder.pending, refresh=False)
    except KeyboardInterrupt:
        bar.close()
        return builder.finish(interrupted=True)
    bar.close()
    return builder.finish()
