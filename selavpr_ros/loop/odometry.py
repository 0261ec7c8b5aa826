"""Distance travelled along the odometry, with gaps and jumps detected.

The exclusion window is measured along the trajectory, so it is integrated from every odometry
message (not only keyframes, between which the robot may drive far unseen). A step faster than
``max_speed_mps`` is a jump (a SLAM reset or relocalisation): it is not counted as travel, which
keeps the exclusion window conservative, and the caller clears its consistency history. A gap
longer than ``max_gap_s`` is reported; images inside it get no pose from the track.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from selavpr_ros.io.poses import Pose

log = logging.getLogger(__name__)


class PathTracker:
    """Cumulative path length (m) over odometry stamps."""

    def __init__(self, max_speed_mps: float = 50.0, max_gap_s: float = 1.0) -> None:
        self.max_speed_mps = max_speed_mps
        self.max_gap_s = max_gap_s
        self._stamps: list[int] = []
        self._paths: list[float] = []
        self._last: Pose | None = None
        self.jumps = 0
        self.gaps = 0

    def add(self, pose: Pose) -> str:
        """Integrate one odometry pose; returns "" or "jump" / "gap" / "old" (ignored)."""
        last = self._last
        if last is None:
            self._append(pose, 0.0)
            return ""
        dt = (pose.stamp_ns - last.stamp_ns) / 1e9
        if dt <= 0:
            return "old"
        step = math.dist(pose.position, last.position)
        event = ""
        if step > self.max_speed_mps * dt:
            self.jumps += 1
            log.warning("odometry jumped %.1f m in %.3f s at %d ns: not counted as travel; "
                        "loop consistency restarts", step, dt, pose.stamp_ns)
            step, event = 0.0, "jump"
        elif dt > self.max_gap_s:
            self.gaps += 1
            log.warning("odometry gap of %.2f s before %d ns: images in it get no pose", dt,
                        pose.stamp_ns)
            event = "gap"
        self._append(pose, self._paths[-1] + step)
        return event

    def _append(self, pose: Pose, path: float) -> None:
        self._stamps.append(pose.stamp_ns)
        self._paths.append(path)
        self._last = pose

    def path_at(self, stamp_ns: int) -> float | None:
        """Path length at ``stamp_ns`` (interpolated; None before the first pose)."""
        if not self._stamps or stamp_ns < self._stamps[0]:
            return None
        return float(np.interp(stamp_ns, self._stamps, self._paths))
