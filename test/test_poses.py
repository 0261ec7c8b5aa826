"""Pose interpolation: linear position, slerp orientation, tolerance, no extrapolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selavpr_ros.io.poses import Pose, PoseTrack, interpolate, rotation_angle, slerp


def yaw_quat(yaw: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def test_slerp_of_a_constant_rate_rotation_is_exact() -> None:
    for t in (0.0, 0.1, 0.5, 0.77, 1.0):
        q = slerp(yaw_quat(0.3), yaw_quat(1.5), t)
        expected = yaw_quat(0.3 + t * 1.2)
        assert np.allclose(q, expected, atol=1e-12)


def test_slerp_takes_the_short_way_when_signs_differ() -> None:
    # yaw 170 deg and -170 deg are 20 deg apart; the second is given as -q (same rotation)
    q0 = yaw_quat(math.radians(170))
    q1 = tuple(-v for v in yaw_quat(math.radians(-170)))
    mid = slerp(q0, q1, 0.5)
    assert abs(float(np.dot(mid, yaw_quat(math.pi)))) == pytest.approx(1.0, abs=1e-12)


def test_rotation_angle() -> None:
    assert rotation_angle(yaw_quat(0.1), yaw_quat(0.6)) == pytest.approx(0.5)
    assert rotation_angle(yaw_quat(0.2), tuple(-v for v in yaw_quat(0.2))) == pytest.approx(0.0)


def test_interpolate_position_linearly() -> None:
    p0 = Pose(1_000, (0.0, 2.0, -1.0), yaw_quat(0.0))
    p1 = Pose(3_000, (4.0, 2.0, 1.0), yaw_quat(1.0))
    mid = interpolate(p0, p1, 1_500)
    assert mid.stamp_ns == 1_500
    assert mid.position == pytest.approx((1.0, 2.0, -0.5))
    assert np.allclose(mid.orientation, yaw_quat(0.25))


def test_pose_normalises_and_rejects_bad_values() -> None:
    assert Pose(0, (0, 0, 0), (0, 0, 0, 2)).orientation == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="no direction"):
        Pose(0, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="finite"):
        Pose(0, (0, float("nan"), 0))


def test_track_answers_within_tolerance_only() -> None:
    # poses at 0, 100, 200 ms and then a gap up to 600 ms; added out of order
    track = PoseTrack([Pose(s * 10**6, (s / 100, 0, 0)) for s in (200, 0, 600, 100)])
    assert len(track) == 4 and track.first_stamp == 0 and track.last_stamp == 600 * 10**6
    tol = 150 * 10**6
    assert track.at(50 * 10**6, tol).position == pytest.approx((0.5, 0, 0))
    assert track.at(100 * 10**6, 0).position == (1.0, 0.0, 0.0)  # exact hit needs no bracket
    assert track.at(300 * 10**6, tol) is None  # the pose after is 300 ms away
    assert track.at(300 * 10**6, 400 * 10**6).position == pytest.approx((3.0, 0, 0))
    assert track.at(-1, tol) is None  # before the track: no extrapolation
    assert track.at(601 * 10**6, tol) is None  # after the track
    assert track.at(50 * 10**6, tol).orientation is None  # positions-only track


def test_track_drop_before_keeps_the_bracketing_pose() -> None:
    track = PoseTrack([Pose(s, (float(s), 0, 0)) for s in range(0, 100, 10)])
    track.drop_before(55)
    assert track.first_stamp == 50
    assert track.at(55, 10).position == pytest.approx((55.0, 0, 0))
