"""Keyframe selection: which frames of a drive become places of the map.

A camera at 30 Hz sees nearly the same scene many times; storing every frame wastes space and
makes retrieval ambiguous. A frame becomes a new place when, since the last place, the robot
moved at least ``min_distance`` metres, OR turned at least ``min_rotation_deg`` degrees, OR at
least ``min_interval`` seconds passed. A criterion set to None is off; a criterion set to 0 is
met by every frame (keeps every frame). With every criterion off, every frame is kept too.
The first frame of a drive is always a place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selavpr_ros.errors import ConfigError
from selavpr_ros.io.poses import Pose, rotation_angle


@dataclass(frozen=True)
class KeyframeConfig:
    """Thresholds of the keyframe rule (see the module docstring); None turns one off.

    Attributes:
        min_distance: metres moved since the last place.
        min_rotation_deg: degrees turned since the last place (ignored for poses without an
            orientation).
        min_interval: seconds since the last place.
    """

    min_distance: float | None = 0.5
    min_rotation_deg: float | None = 15.0
    min_interval: float | None = None

    def __post_init__(self) -> None:
        for name in ("min_distance", "min_rotation_deg", "min_interval"):
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"{name} must be >= 0 (or off), got {value}")

    @property
    def keeps_everything(self) -> bool:
        values = (self.min_distance, self.min_rotation_deg, self.min_interval)
        return all(v is None for v in values) or any(v == 0 for v in values)


class KeyframeSelector:
    """Applies :class:`KeyframeConfig` to a stream of frames, relative to the last place."""

    def __init__(self, config: KeyframeConfig, last: Pose | None = None) -> None:
        """``last``: the drive's last place so far (when resuming an interrupted build)."""
        self.config = config
        self.last = last

    def is_keyframe(self, pose: Pose) -> bool:
        """Whether a frame at ``pose`` (stamped) would be a new place; changes nothing."""
        c, last = self.config, self.last
        if last is None or c.keeps_everything:
            return True
        if c.min_distance is not None:
            if math.dist(pose.position, last.position) >= c.min_distance:
                return True
        if (
            c.min_rotation_deg is not None
            and pose.orientation is not None
            and last.orientation is not None
        ):
            angle = math.degrees(rotation_angle(pose.orientation, last.orientation))
            if angle >= c.min_rotation_deg:
                return True
        if c.min_interval is not None:
            if pose.stamp_ns - last.stamp_ns >= round(c.min_interval * 1e9):
                return True
        return False

    def accept(self, pose: Pose) -> None:
        """Record that a frame at ``pose`` became a place."""
        self.last = pose
