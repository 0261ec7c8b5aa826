"""Which CameraInfo an image gets: its own stamp's, the nearest, or the one calibration."""

from __future__ import annotations

import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 messages are absent (scripts/setup.sh)")

from sensor_msgs.msg import CameraInfo  # noqa: E402

from selavpr_ros.ros.camera_info import CameraInfoCache  # noqa: E402

S = 10**9


def info(fx: float) -> CameraInfo:
    msg = CameraInfo(width=320, height=240, distortion_model="plumb_bob", d=[0.0] * 5)
    msg.k = [fx, 0.0, 160.0, 0.0, fx, 120.0, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [fx, 0.0, 160.0, 0.0, 0.0, fx, 120.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


def test_before_any_camera_info_the_reason_says_so() -> None:
    assert CameraInfoCache().lookup(5 * S) == (None, "no camera info received")


def test_one_calibration_serves_an_image_whose_own_info_is_late() -> None:
    cache = CameraInfoCache(tolerance_s=0.1)
    cache.add(1 * S, info(200.0))
    camera, why = cache.lookup(2 * S)  # a 1 Hz camera: this frame's info not delivered yet
    assert camera is not None and camera.fx == 200.0 and why == ""


def test_with_several_calibrations_the_stamp_decides() -> None:
    cache = CameraInfoCache(tolerance_s=0.1)
    cache.add(1 * S, info(200.0))
    cache.add(2 * S, info(400.0))  # zoomed
    assert cache.lookup(1 * S)[0].fx == 200.0
    assert cache.lookup(2 * S + S // 20)[0].fx == 400.0  # nearest within the tolerance
    camera, why = cache.lookup(3 * S)
    assert camera is None and "no camera info within 0.1 s" in why


def test_a_refused_calibration_gives_its_reason() -> None:
    cache = CameraInfoCache()
    bad = info(200.0)
    bad.k = [0.0] * 9
    cache.add(1 * S, bad)
    camera, why = cache.lookup(3 * S)
    assert camera is None and why.startswith("camera info refused") and "not calibrated" in why
