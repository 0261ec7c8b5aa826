"""Distance travelled along the odometry, with gaps, jumps and stray stamps handled.

The exclusion window is measured along the trajectory, so it is integrated from every odometry
message (not only keyframes, between which the robot may drive far unseen). A step faster than
``max_speed_mps`` is a jump (a SLAM reset or relocalisation): it is not counted as travel, which
keeps the exclusion window conservative, and the caller clears its consistency history. A gap
longer than ``max_gap_s`` is reported; images inside it get no pose from the track.

A message far ahead of the last one is held until the next message says whether time really
went on (a gap) or the stamp was stray (dropped, "outlier"): one bad stamp must not make every
later message look "older than the last one". Messages older than the last one are ignored,
unless ``RESET_AFTER`` of them in a row agree with each other: then time went back (a bag
replayed again, a simulator reset) and the track restarts there ("reset").
"""
from __future__ import annotations

import bisect
import logging
import math

import numpy as np

from selavpr_ros.io.poses import Pose, PoseTrack

log = logging.getLogger(__name__)


RESET_AFTER = 5  # consecutive in-order messages behind the track that restart it


class PathTracker:
    """Cumulative path length (m) over odometry stamps, and the accepted poses (``track``)."""

    def __init__(self, max_speed_mps: float = 50.0, max_gap_s: float = 1.0) -> None:
        self.max_speed_mps = max_speed_mps
        self.max_gap_s = max_gap_s
        self.track = PoseTrack()  # the accepted poses, for interpolation at image stamps
        self._stamps: list[int] = []
        self._paths: list[float] = []
        self._last: Pose | None = None
        self._held: Pose | None = None  # far ahead of the last pose: gap or stray stamp?
        self._behind: list[Pose] = []  # consecutive messages older than the last pose
        self.jumps = self.gaps = self.outliers = self.resets = 0

    def add(self, pose: Pose) -> str:
        """Take one odometry pose; returns "" or what happened.

        "jump" / "gap" (of the pose or of one held before it), "held" (far ahead: decided by
        the next message), "outlier" (the held pose was a stray stamp and is dropped), "old"
        (ignored: older than the last pose), "reset" (time went back; the track restarts).
        """
        held = self._held
        if held is not None:
            if pose.stamp_ns > held.stamp_ns:  # time really went on
                self._held = None
                event = self._commit(held)
                return self._commit(pose) or event
            if self._last is None or pose.stamp_ns > self._last.stamp_ns:
                self._held = None
                self.outliers += 1
                log.warning("odometry stamped %.3f s ahead of the track at %d ns and followed "
                            "by older messages: stray stamp dropped",
                            (held.stamp_ns - pose.stamp_ns) / 1e9, held.stamp_ns)
                self._commit(pose)
                return "outlier"
        last = self._last
        if last is None:
            return self._commit(pose)
        dt = (pose.stamp_ns - last.stamp_ns) / 1e9
        if dt <= 0:
            return self._fall_behind(pose)
        if dt > self.max_gap_s:
            self._held = pose
            return "held"
        return self._commit(pose)

    def _commit(self, pose: Pose) -> str:
        self._behind = []
        last = self._last
        step, event = 0.0, ""
        if last is not None:
            dt = (pose.stamp_ns - last.stamp_ns) / 1e9
            step = math.dist(pose.position, last.position)
            if step > self.max_speed_mps * dt:
                self.jumps += 1
                log.warning("odometry jumped %.1f m in %.3f s at %d ns: not counted as "
                            "travel; loop consistency restarts", step, dt, pose.stamp_ns)
                step, event = 0.0, "jump"
            elif dt > self.max_gap_s:
                self.gaps += 1
                log.warning("odometry gap of %.2f s before %d ns: images in it get no pose", dt,
                            pose.stamp_ns)
                event = "gap"
        self._stamps.append(pose.stamp_ns)
        self._paths.append((self._paths[-1] if self._paths else 0.0) + step)
        self._last = pose
        self.track.add(pose)
        return event

    def _fall_behind(self, pose: Pose) -> str:
        if self._behind and pose.stamp_ns <= self._behind[-1].stamp_ns:
            self._behind = []
        self._behind.append(pose)
        if len(self._behind) < RESET_AFTER:
            return "old"
        behind, total = self._behind, self._paths[-1]
        self.resets += 1
        log.warning("odometry went back in time to %d ns (%d messages in order): the track "
                    "restarts there", behind[0].stamp_ns, len(behind))
        keep = bisect.bisect_left(self._stamps, behind[0].stamp_ns)
        del self._stamps[keep:], self._paths[keep:]
        self.track.drop_from(behind[0].stamp_ns)
        self._stamps.append(behind[0].stamp_ns)
        self._paths.append(total)  # travel before the reset stays counted
        self._last = behind[0]
        self.track.add(behind[0])
        for later in behind[1:]:
            self._commit(later)
        self._behind = []
        return "reset"

    def path_at(self, stamp_ns: int) -> float | None:
        """Path length at ``stamp_ns`` (interpolated; None before the first pose)."""
        if not self._stamps or stamp_ns < self._stamps[0]:
            return None
        return float(np.interp(stamp_ns, self._stamps, self._paths))
