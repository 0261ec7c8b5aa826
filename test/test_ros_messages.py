"""selavpr_msgs over real DDS: a separate process publishes, the test process receives."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

import ros_harness

pytestmark = pytest.mark.ros

SPEC = {
    "stamp_ns": 1_700_000_123_456_789_012,
    "camera_frame": "camera_optical",
    "map_id": "3f1c2a9e-campus",
    "map_frame": "map",
    "candidates": [
        {"place_id": 2**40 + 7, "place_stamp_ns": 1_690_000_000_000_000_001,
         "pose": [12.5, -3.25, 0.125, 0.0, 0.0, 0.70710678, 0.70710678], "has_pose": True,
         "global_similarity": 0.875, "rerank_score": 1234.0, "global_rank": 3},
        {"place_id": 11, "place_stamp_ns": 0, "pose": [0, 0, 0, 0, 0, 0, 1],
         "has_pose": False, "global_similarity": -0.25, "rerank_score": float("nan"),
         "global_rank": 0},
    ],
    "accepted": True,
    "confidence": 0.625,
    "reject_reason": "",
    "matched_place_id": 2**40 + 7,
    "matched_place_stamp_ns": 1_690_000_000_000_000_001,
    "matched_pose": [12.5, -3.25, 0.125, 0.0, 0.0, 0.70710678, 0.70710678],
    "covariance": [float(i) / 4 for i in range(36)],
    "stages": [["decode", 1.5], ["extract", 27.25], ["search", 0.5], ["rerank", 85.0]],
    "processing_ms": 114.25,
    "latency_ms": 130.5,
}


def stamp_ns(t) -> int:
    return t.sec * 10**9 + t.nanosec


def pose_list(p) -> list[float]:
    return [p.position.x, p.position.y, p.position.z,
            p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]


def test_place_recognition_round_trip_between_processes(tmp_path: Path, ros_probe, start_process):
    from selavpr_msgs.msg import PlaceRecognition

    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    topic = "/selavpr_test/place_recognition"
    ros_probe.subscribe(PlaceRecognition, topic)
    publisher = start_process(
        [sys.executable, str(ros_harness.TEST_DIR / "place_recognition_publisher.py"),
         str(spec_file), topic])
    ros_probe.wait_for_publishers(topic)
    publisher.wait_for_output("matched")
    msg = ros_probe.wait_for_messages(topic)[0]

    assert stamp_ns(msg.header.stamp) == SPEC["stamp_ns"]
    assert msg.header.frame_id == "camera_optical"
    assert msg.map_id == "3f1c2a9e-campus" and msg.map_frame == "map"
    assert len(msg.candidates) == 2
    first, second = msg.candidates
    assert first.place_id == 2**40 + 7  # uint64 survives beyond 32 bits
    assert stamp_ns(first.place_stamp) == 1_690_000_000_000_000_001
    assert pose_list(first.pose) == SPEC["candidates"][0]["pose"]  # float64: exact
    assert first.has_pose and not second.has_pose
    assert first.global_similarity == 0.875 and second.global_similarity == -0.25
    assert first.rerank_score == 1234.0 and math.isnan(second.rerank_score)
    assert (first.global_rank, second.global_rank) == (3, 0)
    assert msg.accepted is True
    assert msg.confidence == 0.625 and msg.reject_reason == ""
    assert msg.matched_place_id == 2**40 + 7
    assert stamp_ns(msg.matched_place_stamp) == 1_690_000_000_000_000_001
    assert pose_list(msg.matched_pose.pose) == SPEC["matched_pose"]
    assert list(msg.matched_pose.covariance) == SPEC["covariance"]
    assert [(s.stage, s.ms) for s in msg.stages] == [tuple(s) for s in SPEC["stages"]]
    assert (msg.processing_ms, msg.latency_ms) == (114.25, 130.5)
    assert publisher.stop() == 0
