"""Poses, quaternion slerp, and the pose of a camera frame from the pose stream around it.

Images and poses come from different sensors at different rates, so the pose of an image is
interpolated at the image's stamp from the two poses around it: position linearly, orientation
by spherical linear interpolation (slerp). A frame is only given a pose when both neighbours lie
within a tolerance of its stamp; otherwise the robot could have moved anywhere in between, and
the frame is skipped rather than placed wrongly. The offline builder (whole pose track known) and
the live node (a short buffer) call the same :meth:`PoseTrack.at`, so both pair identically.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]  # (x, y, z, w)

IDENTITY: Quat = (0.0, 0.0, 0.0, 1.0)


def normalize_quaternion(q: Sequence[float]) -> Quat:
    """``q`` scaled to unit length; raises ValueError for a zero or non-finite quaternion."""
    values = tuple(float(v) for v in q)
    if len(values) != 4:
        raise ValueError(f"a quaternion needs 4 values (x, y, z, w), got {len(values)}")
    norm = math.sqrt(sum(v * v for v in values))
    if not math.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {values} has no direction (norm {norm})")
    x, y, z, w = (v / norm for v in values)
    return (x, y, z, w)


MAX_STAMP_NS = 2**63 - 1  # what a signed 64-bit integer (and a SQLite INTEGER) holds


def check_stamp_ns(stamp_ns: int) -> int:
    """``stamp_ns`` if it is a time a map can store (0 .. 2**63-1 ns), else ValueError."""
    if isinstance(stamp_ns, float) and not math.isfinite(stamp_ns):
        raise ValueError(f"timestamp {stamp_ns} is not a finite time")
    value = int(stamp_ns)
    if not 0 <= value <= MAX_STAMP_NS:
        raise ValueError(
            f"timestamp {value} ns is outside 0 .. {MAX_STAMP_NS} ns (1970 .. 2262)"
        )
    return value


@dataclass(frozen=True)
class Pose:
    """A stamped pose: position in metres and an optional unit quaternion (x, y, z, w).

    The orientation is None when the source only knows positions (a positions-only CSV).
    """

    stamp_ns: int
    position: Vec3
    orientation: Quat | None = None

    def __post_init__(self) -> None:
        position = tuple(float(v) for v in self.position)
        if len(position) != 3 or not all(math.isfinite(v) for v in position):
            raise ValueError(f"position must be 3 finite values, got {self.position}")
        object.__setattr__(self, "position", position)
        object.__setattr__(self, "stamp_ns", check_stamp_ns(self.stamp_ns))
        if self.orientation is not None:
            object.__setattr__(self, "orientation", normalize_quaternion(self.orientation))


def slerp(q0: Sequence[float], q1: Sequence[float], t: float) -> Quat:
    """Spherical linear interpolation between unit quaternions, along the shorter arc."""
    a = np.asarray(q0, dtype=np.float64)
    b = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # q and -q are the same rotation; take the short way round
        b, dot = -b, -dot
    if dot > 0.9999995:  # nearly equal: the sine below would vanish; lerp is exact enough
        out = a + t * (b - a)
    else:
        theta = math.acos(min(dot, 1.0))
        s = math.sin(theta)
        out = (math.sin((1.0 - t) * theta) / s) * a + (math.sin(t * theta) / s) * b
    return normalize_quaternion(out.tolist())


def rotation_angle(q0: Sequence[float], q1: Sequence[float]) -> float:
    """Return the angle in radians of the rotation between two unit quaternions (0..pi)."""
    dot = abs(float(np.dot(np.asarray(q0, np.float64), np.asarray(q1, np.float64))))
    return 2.0 * math.acos(min(dot, 1.0))


def interpolate(p0: Pose, p1: Pose, stamp_ns: int) -> Pose:
    """Interpolate the pose at ``stamp_ns`` between ``p0`` and ``p1`` (lerp, slerp)."""
    span = p1.stamp_ns - p0.stamp_ns
    if span <= 0:
        return replace(p0, stamp_ns=stamp_ns)
    t = (stamp_ns - p0.stamp_ns) / span
    position = tuple(a + t * (b - a) for a, b in zip(p0.position, p1.position, strict=True))
    orientation = None
    if p0.orientation is not None and p1.orientation is not None:
        orientation = slerp(p0.orientation, p1.orientation, t)
    # position zips two Vec3 (strict), so it has 3 values; Pose checks it again
    return Pose(stamp_ns, position, orientation)  # type: ignore[arg-type]


class PoseTrack:
    """Poses sorted by stamp; answers "where was the robot at time t?".

    Poses may be added out of order (they are inserted in place); a pose with the stamp of an
    existing one replaces it.
    """

    def __init__(self, poses: Iterable[Pose] = ()) -> None:
        self._stamps: list[int] = []
        self._poses: list[Pose] = []
        for pose in poses:
            self.add(pose)

    def __len__(self) -> int:
        return len(self._poses)

    @property
    def first_stamp(self) -> int | None:
        return self._stamps[0] if self._stamps else None

    @property
    def last_stamp(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def add(self, pose: Pose) -> None:
        i = bisect.bisect_left(self._stamps, pose.stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == pose.stamp_ns:
            self._poses[i] = pose
            return
        self._stamps.insert(i, pose.stamp_ns)
        self._poses.insert(i, pose)

    def drop_before(self, stamp_ns: int) -> None:
        """Forget poses older than ``stamp_ns``, keeping the newest one before it."""
        i = bisect.bisect_left(self._stamps, stamp_ns) - 1
        if i > 0:
            del self._stamps[:i]
            del self._poses[:i]

    def drop_from(self, stamp_ns: int) -> None:
        """Forget poses at or after ``stamp_ns`` (the track restarts there)."""
        i = bisect.bisect_left(self._stamps, stamp_ns)
        del self._stamps[i:]
        del self._poses[i:]

    def at(self, stamp_ns: int, tolerance_ns: int) -> Pose | None:
        """Return the pose at ``stamp_ns``; None when no pose lies on both sides within tolerance.

        A pose stamped exactly at ``stamp_ns`` is returned as is. Otherwise the closest poses
        before and after must each be at most ``tolerance_ns`` away; there is no extrapolation
        past either end of the track.
        """
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return self._poses[i]
        if i == 0 or i == len(self._stamps):
            return None
        before, after = self._poses[i - 1], self._poses[i]
        if stamp_ns - before.stamp_ns > tolerance_ns or after.stamp_ns - stamp_ns > tolerance_ns:
            return None
        return interpolate(before, after, stamp_ns)
