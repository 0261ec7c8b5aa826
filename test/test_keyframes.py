"""Keyframe rules: distance, rotation, interval; 0 keeps every frame; None switches one off."""

from __future__ import annotations

import math

import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.io.poses import Pose
from selavpr_ros.mapping.keyframes import KeyframeConfig, KeyframeSelector


def kept(config: KeyframeConfig, poses: list[Pose]) -> list[int]:
    selector = KeyframeSelector(config)
    out = []
    for i, pose in enumerate(poses):
        if selector.is_keyframe(pose):
            selector.accept(pose)
            out.append(i)
    return out


def line(n: int, step: float, dt_ms: int = 100) -> list[Pose]:
    return [Pose(i * dt_ms * 10**6, (i * step, 0.0, 0.0), (0, 0, 0, 1)) for i in range(n)]


def turning(n: int, step_deg: float) -> list[Pose]:
    out = []
    for i in range(n):
        yaw = math.radians(i * step_deg)
        out.append(Pose(i * 10**8, (0, 0, 0), (0, 0, math.sin(yaw / 2), math.cos(yaw / 2))))
    return out


def test_distance_rule_counts_from_the_last_place() -> None:
    config = KeyframeConfig(min_distance=1.0, min_rotation_deg=None, min_interval=None)
    assert kept(config, line(13, 0.3)) == [0, 4, 8, 12]


def test_rotation_rule_in_degrees_across_the_half_turn() -> None:
    config = KeyframeConfig(min_distance=None, min_rotation_deg=25.0, min_interval=None)
    assert kept(config, turning(20, 10.0)) == [0, 3, 6, 9, 12, 15, 18]


def test_any_criterion_makes_a_place() -> None:
    poses = line(10, 0.1, dt_ms=100)  # 0.1 m per 100 ms
    config = KeyframeConfig(min_distance=0.5, min_rotation_deg=15.0, min_interval=0.3)
    assert kept(config, poses) == [0, 3, 6, 9]  # the interval (0.3 s) fires before 0.5 m
    config = KeyframeConfig(min_distance=0.5, min_rotation_deg=15.0, min_interval=None)
    assert kept(config, line(10, 0.25)) == [0, 2, 4, 6, 8]  # binary-exact steps


def test_zero_keeps_every_frame_and_all_off_keeps_every_frame() -> None:
    poses = line(5, 0.0)
    assert kept(KeyframeConfig(min_distance=0.0, min_interval=None), poses) == [0, 1, 2, 3, 4]
    assert kept(KeyframeConfig(None, None, None), poses) == [0, 1, 2, 3, 4]
    assert kept(KeyframeConfig(1.0, 15.0, None), poses) == [0]  # standing still


def test_rotation_is_ignored_without_orientation() -> None:
    poses = [Pose(i * 10**8, (0.0, 0.0, 0.0)) for i in range(4)]
    assert kept(KeyframeConfig(min_distance=1.0, min_rotation_deg=1.0), poses) == [0]


def test_resumed_selector_continues_from_the_last_place() -> None:
    selector = KeyframeSelector(KeyframeConfig(1.0, None, None), last=Pose(0, (5.0, 0, 0)))
    assert not selector.is_keyframe(Pose(1, (5.5, 0, 0)))
    assert selector.is_keyframe(Pose(2, (6.0, 0, 0)))


@pytest.mark.parametrize("field", ["min_distance", "min_rotation_deg", "min_interval"])
def test_negative_or_infinite_thresholds_are_refused(field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        KeyframeConfig(**{field: -1.0})
    with pytest.raises(ConfigError, match=field):
        KeyframeConfig(**{field: math.inf})
