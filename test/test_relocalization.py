"""Publishing query poses: the agreement gate, map -> odom, robot pose, camera info, messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.geometry import CameraModel, PoseEstimate
from selavpr_ros.geometry.transforms import invert, pose_matrix
from selavpr_ros.localizer.config import from_values
from selavpr_ros.localizer.pose import robot_pose
from selavpr_ros.localizer.relocalization import (
    ConsistencyGate,
    RelocalizationConfig,
    jump_too_large,
    map_to_odom,
)

YAW90 = (0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5))


def est(x: float, yaw_deg: float = 0.0, source: str = "pnp") -> PoseEstimate:
    half = math.radians(yaw_deg) / 2
    return PoseEstimate(source, (x, 0.0, 0.0), (0.0, 0.0, math.sin(half), math.cos(half)),  # type: ignore[arg-type]
                        np.eye(6) * 0.01, 50, 1.0)


def test_gate_needs_consecutive_agreeing_estimates() -> None:
    gate = ConsistencyGate(RelocalizationConfig(consistent_frames=3, consistent_m=0.5,
                                                consistent_deg=5, relocalization_rate=0))
    assert [gate.add(est(x), t) for t, x in enumerate([0.0, 0.1])] == [False, False]
    assert gate.add(est(0.2), 2)  # three within 0.5 m
    assert gate.add(est(0.3), 3)  # and on while they agree (no rate limit)
    assert not gate.add(est(0.3, yaw_deg=20), 4)  # turned: disagrees
    assert not gate.add(None, 5)  # a rejected frame breaks the run
    assert not gate.add(est(0.3), 6) and not gate.add(est(0.3), 7)
    assert gate.add(est(0.3), 8)
    orientationless = PoseEstimate("keyframe", (0.3, 0.0, 0.0), None, np.eye(6))
    assert not gate.add(orientationless, 9)  # never released without an orientation


def test_gate_rate_and_on_request() -> None:
    gate = ConsistencyGate(RelocalizationConfig(consistent_frames=1, relocalization_rate=2.0))
    assert [gate.add(est(0), t) for t in (0.0, 0.2, 0.4, 0.6)] == [True, False, False, True]
    gate = ConsistencyGate(RelocalizationConfig(consistent_frames=2,
                                                relocalization_mode="on_request"))
    assert not any(gate.add(est(0), t) for t in range(4))  # nothing requested
    gate.request()
    assert not gate.add(None, 5) and not gate.add(est(0), 6)  # not yet consistent
    assert [gate.add(est(0), t) for t in (7, 8, 9)] == [True, False, False]  # exactly once


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="relocalization_mode"):
        from_values(RelocalizationConfig, {"relocalization_mode": "sometimes"})
    with pytest.raises(ConfigError, match="consistent_frames"):
        from_values(RelocalizationConfig, {"consistent_frames": 0})
    assert from_values(RelocalizationConfig, {"consistent_m": 2}).consistent_m == 2.0


def test_map_to_odom_and_jump_limit() -> None:
    robot_in_odom = pose_matrix((1.0, 2.0, 0.0), YAW90)
    true_map_odom = pose_matrix((10.0, -3.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    robot_in_map = true_map_odom @ robot_in_odom
    found = map_to_odom(robot_in_map, robot_in_odom)
    assert np.allclose(found, true_map_odom, atol=1e-9)
    cfg = RelocalizationConfig(tf_max_jump_m=2.0, tf_max_jump_deg=10.0)
    assert jump_too_large(None, found, cfg) == ""
    assert jump_too_large(found, found @ pose_matrix((1.5, 0, 0), (0, 0, 0, 1)), cfg) == ""
    assert "move 3.00 m" in jump_too_large(found, found @ pose_matrix((3, 0, 0), (0, 0, 0, 1)),
                                           cfg)
    assert "turn 90.0 deg" in jump_too_large(found, found @ pose_matrix((0, 0, 0), YAW90), cfg)


def test_robot_pose_from_camera_pose() -> None:
    camera_in_base = pose_matrix((0.5, 0.0, 1.2), (0.0, 0.0, 0.0, 1.0))
    base_truth = pose_matrix((3.0, 4.0, 0.0), YAW90)
    camera = base_truth @ camera_in_base
    cov = np.diag([0.01, 0.01, 0.01, 0.0, 0.0, 0.04])  # yaw uncertain
    e = PoseEstimate("pnp", tuple(camera[:3, 3]), YAW90, cov, 40, 1.0)  # type: ignore[arg-type]
    base = robot_pose(e, camera_in_base)
    assert np.allclose(base.matrix(), base_truth, atol=1e-9)
    assert base.source == "pnp" and base.inliers == 40
    # yaw error moves the base sideways by the 0.5 m lever arm: variance grows by 0.5^2 * 0.04
    assert base.covariance is not None
    assert base.covariance[0, 0] == pytest.approx(0.01 + 0.25 * 0.04, rel=1e-6)
    assert base.covariance[2, 2] == pytest.approx(0.01, rel=1e-6)
    none = robot_pose(PoseEstimate("keyframe", (1.0, 2.0, 0.0), None), invert(camera_in_base))
    assert none.source == "none" and "orientation" in none.reason


def test_camera_info_cache_matches_stamps_and_refuses_bad_info() -> None:
    from sensor_msgs.msg import CameraInfo

    from selavpr_ros.ros.camera_info import CameraInfoCache

    good = CameraInfo(width=320, height=240, distortion_model="plumb_bob", d=[0.0] * 5,
                      k=[200.0, 0, 159.5, 0, 200.0, 119.5, 0, 0, 1])
    bad = CameraInfo(width=320, height=240, k=[0.0] * 9)  # an uncalibrated driver
    cache = CameraInfoCache(size=4, tolerance_s=0.1)
    assert cache.lookup(10)[1] == "no camera info received"
    cache.add(1_000_000_000, good)
    cache.add(2_000_000_000, bad)
    model, why = cache.lookup(1_000_000_000)
    assert isinstance(model, CameraModel) and model.fx == 200.0 and why == ""
    assert cache.lookup(1_050_000_000)[0] is model  # nearest within the tolerance
    model, why = cache.lookup(2_000_000_000)
    assert model is None and "camera info refused" in why and "not calibrated" in why
    assert "within 0.1 s" in cache.lookup(5_000_000_000)[1]
    for i in range(5):
        cache.add(3_000_000_000 + i, good)
    # the refused calibration is evicted: the camera's one calibration now serves any stamp,
    # also that of an image whose own CameraInfo is not delivered yet (two topics, two callbacks)
    model, why = cache.lookup(9_000_000_000)
    assert model is not None and model.fx == 200.0 and why == ""


def test_messages_carry_the_estimate() -> None:
    from std_msgs.msg import Header

    from selavpr_msgs.msg import PlaceRecognition
    from selavpr_ros.localizer import Candidate, LocalizationResult
    from selavpr_ros.ros.conversions import has_publishable_pose, result_to_msg

    cand = Candidate(7, 5, (1.0, 2.0, 0.0), None, 0.9, 100.0, 0)
    keyframe = PoseEstimate("keyframe", (1.0, 2.0, 0.0), None, np.diag([4.0] * 3 + [1e6] * 3),
                            reason="no camera model for the query", places=(7,))
    result = LocalizationResult("id", "map", (cand,), True, 0.8, "", cand, pose=keyframe)
    header = Header(frame_id="cam")
    msg = result_to_msg(result, header, max_candidates=5)
    assert msg.pose_source == PlaceRecognition.POSE_KEYFRAME == "keyframe"
    assert not msg.pose_has_orientation and msg.pose_frame == "cam"
    assert msg.matched_pose.covariance[21] == 1e6 and msg.matched_pose.pose.orientation.w == 1.0
    assert math.isnan(msg.pose_reprojection_error)
    assert not has_publishable_pose(msg)  # no orientation in the map: not for /initialpose
    pnp = est(1.5)
    msg = result_to_msg(result, header, max_candidates=5, pose=pnp, pose_frame="base_link")
    assert msg.pose_source == "pnp" and msg.pose_inliers == 50
    assert msg.pose_reprojection_error == pytest.approx(1.0)
    assert msg.matched_pose.pose.position.x == 1.5 and msg.pose_frame == "base_link"
    assert list(msg.matched_pose.covariance)[::7] == pytest.approx([0.01] * 6)
    assert has_publishable_pose(msg)
    rejected = LocalizationResult("id", "map", (cand,), False, 0.0, "margin", None)
    msg = result_to_msg(rejected, header, max_candidates=5)
    assert msg.pose_source == "none" and not has_publishable_pose(msg)


def test_map_to_odom_estimates_are_compared_where_the_robot_is_now() -> None:
    # A robot 200 m from its odom origin, estimates 0.3 deg apart in yaw: as map -> odom they
    # differ by ~1 m (rotation x distance), carried forward to the robot they agree to ~0.
    config = RelocalizationConfig(consistent_frames=2, consistent_m=0.5, consistent_deg=2.0,
                                  relocalization_rate=0.0)
    robot_in_odom = pose_matrix((200.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    truth = pose_matrix((205.0, 3.0, 0.0), (0.0, 0.0, 0.0, 1.0))  # robot in map

    def map_odom(yaw_deg: float) -> PoseEstimate:
        half = math.radians(yaw_deg) / 2
        robot = truth.copy()
        robot[:3, :3] = pose_matrix((0, 0, 0), (0, 0, math.sin(half), math.cos(half)))[:3, :3]
        m = map_to_odom(robot, robot_in_odom)
        q = (0.0, 0.0, math.sin(half), math.cos(half))
        return PoseEstimate("pnp", tuple(m[:3, 3]), q, np.eye(6) * 0.01, 50, 1.0)  # type: ignore[arg-type]

    a, b = map_odom(0.0), map_odom(0.3)
    assert math.dist(a.position, b.position) > 0.9  # as map -> odom they seem 1 m apart
    plain = ConsistencyGate(config)
    assert not plain.add(a, 0.0) and not plain.add(b, 1.0)
    carried = ConsistencyGate(config)
    assert not carried.add(a, 0.0, at=robot_in_odom)
    assert carried.add(b, 1.0, at=robot_in_odom)
