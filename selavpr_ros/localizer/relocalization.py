"""When a query pose may re-localise the robot: agreement over frames, rate, requests, TF jumps.

A single frame's estimate can be wrong (a repeated facade, a wrong place accepted), and Nav2's
AMCL resets its particles on every ``/initialpose``. So an estimate is released only after
``consistent_frames`` consecutive estimates (with orientation) agree within ``consistent_m``
and ``consistent_deg`` of the newest; in ``continuous`` mode at most ``relocalization_rate``
times per second, in ``on_request`` mode once per request. Whenever odometry is in TF
(``odom_frame`` -> the robot frame at the image stamp) the node compares the ``map -> odom``
each estimate implies, which stays still while the robot drives (odometry removes its motion
between frames), with or without ``publish_tf``, applied to the newest robot pose in odom (the
estimates carried forward by odometry to the newest frame). Without odometry in TF it compares
the poses themselves: the newest and the oldest of the window are then ``consistent_frames - 1``
processed frames apart, so a robot at speed v needs ``consistent_m`` > v x that time.
``map -> odom`` updates that jump more than ``tf_max_jump_m`` / ``tf_max_jump_deg`` from the
held one are refused; the held one is re-published at ``tf_rate`` Hz, stamped
``transform_tolerance`` s ahead of the node's clock (as AMCL does) so lookups at the newest
sensor stamps never extrapolate.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.geometry import PoseEstimate
from selavpr_ros.geometry.transforms import invert, rotation_angle_deg
from selavpr_ros.localizer.config import check_ranges, setting


@dataclass(frozen=True)
class RelocalizationConfig:
    """How the node turns accepted estimates into published poses and TF (see module doc)."""

    relocalization_mode: Literal["continuous", "on_request"] = field(
        default="continuous", metadata=setting(
            "publish the pose 'continuous' (rate-limited) or 'on_request' (~/relocalize)"))
    relocalization_rate: float = field(default=1.0, metadata=setting(
        "continuous mode: at most this many published poses per second (0: no limit)",
        0.0, 1000.0))
    consistent_frames: int = field(default=3, metadata=setting(
        "publish only after this many consecutive estimates agree", 1, 1000))
    consistent_m: float = field(default=1.0, metadata=setting(
        "agreement: position difference (m)", 0.0, 1e6))
    consistent_deg: float = field(default=5.0, metadata=setting(
        "agreement: orientation difference (deg)", 0.0, 180.0))
    base_frame: str = field(default="", metadata=setting(
        "robot frame: publish its pose (camera -> base from TF at the image stamp); empty: "
        "the camera's", live=False))
    publish_tf: bool = field(default=False, metadata=setting(
        "publish map -> odom from consistent estimates (needs odom -> robot in TF)", live=False))
    odom_frame: str = field(default="odom", metadata=setting("odometry frame (publish_tf)",
                                                                   live=False))
    tf_max_jump_m: float = field(default=5.0, metadata=setting(
        "refuse map -> odom updates that move it further (m; 0: no limit)", 0.0, 1e6))
    tf_max_jump_deg: float = field(default=30.0, metadata=setting(
        "refuse map -> odom updates that turn it further (deg; 0: no limit)", 0.0, 180.0))
    tf_rate: float = field(default=20.0, metadata=setting(
        "publish_tf: re-publish the held map -> odom this often (Hz, steady clock)", 0.1, 1000.0,
        live=False))
    transform_tolerance: float = field(default=1.0, metadata=setting(
        "publish_tf: map -> odom is stamped this far ahead of the node's clock (s)", 0.0, 60.0))
    camera_info_topic: str = field(default="", metadata=setting(
        "CameraInfo topic ('': camera_info beside the image topic; 'none': no camera info)",
        live=False))

    def __post_init__(self) -> None:
        if self.relocalization_mode not in ("continuous", "on_request"):
            raise ConfigError("relocalization_mode must be 'continuous' or 'on_request', got "
                              f"{self.relocalization_mode!r}")
        check_ranges(self)
        if self.publish_tf and not self.odom_frame:
            raise ConfigError("publish_tf needs an odom_frame")


class ConsistencyGate:
    """Releases an estimate when the last ``consistent_frames`` ones agree; see module doc."""

    def __init__(self, config: RelocalizationConfig) -> None:
        self.config = config
        self._recent: deque[PoseEstimate] = deque()
        self._last_release: float | None = None
        self._requested = False

    def configure(self, config: RelocalizationConfig) -> None:
        self.config = config

    def request(self) -> None:
        """Ask for the next consistent estimate (on_request mode)."""
        self._requested = True

    @property
    def requested(self) -> bool:
        return self._requested

    def _agree(self, a: PoseEstimate, b: PoseEstimate, at: np.ndarray | None) -> bool:
        ma, mb = a.matrix(), b.matrix()
        if at is not None:  # map -> odom estimates: compare where the robot is now
            ma, mb = ma @ at, mb @ at
        if math.dist(ma[:3, 3], mb[:3, 3]) > self.config.consistent_m:
            return False
        return rotation_angle_deg(ma[:3, :3], mb[:3, :3]) <= self.config.consistent_deg

    def add(self, estimate: PoseEstimate | None, now_s: float,
            at: np.ndarray | None = None) -> bool:
        """Record one frame's estimate (None: rejected frame); True when it is to be published.

        ``at``: when the estimates are ``map -> odom``, the newest robot pose in odom: each
        ``map -> odom`` is applied to it, so they are compared as the robot's pose now (their
        own difference would grow with the distance from the odom origin, by the rotation
        error times that distance).
        """
        cfg = self.config
        if estimate is None or estimate.position is None or estimate.orientation is None:
            self._recent.clear()  # a frame without a full pose breaks the run
            return False
        self._recent.append(estimate)
        while len(self._recent) > cfg.consistent_frames:
            self._recent.popleft()
        if len(self._recent) < cfg.consistent_frames or not all(
                self._agree(e, estimate, at) for e in self._recent):
            if len(self._recent) == cfg.consistent_frames:
                self._recent.popleft()
            return False
        if cfg.relocalization_mode == "on_request":
            if not self._requested:
                return False
            self._requested = False
        elif cfg.relocalization_rate > 0 and self._last_release is not None \
                and now_s - self._last_release < 1.0 / cfg.relocalization_rate:
            return False
        self._last_release = now_s
        return True


def map_to_odom(robot_in_map: np.ndarray, robot_in_odom: np.ndarray) -> np.ndarray:
    """Return map <- odom from the robot's pose in both frames (REP 105)."""
    return np.asarray(robot_in_map, np.float64) @ invert(robot_in_odom)


def jump_too_large(held: np.ndarray | None, new: np.ndarray,
                   config: RelocalizationConfig) -> str:
    """Say why ``new`` map <- odom jumps too far from ``held`` ('' when acceptable)."""
    if held is None:
        return ""
    moved = float(np.linalg.norm(new[:3, 3] - held[:3, 3]))
    turned = rotation_angle_deg(held[:3, :3], new[:3, :3])
    if config.tf_max_jump_m > 0 and moved > config.tf_max_jump_m:
        return f"map -> odom would move {moved:.2f} m (limit {config.tf_max_jump_m:g} m)"
    if config.tf_max_jump_deg > 0 and turned > config.tf_max_jump_deg:
        return f"map -> odom would turn {turned:.1f} deg (limit {config.tf_max_jump_deg:g} deg)"
    return ""

