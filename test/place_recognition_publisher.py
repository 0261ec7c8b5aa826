"""Publisher process for the DDS round-trip test: publishes one PlaceRecognition built from JSON.

Usage: python place_recognition_publisher.py SPEC.json TOPIC
It waits until a subscriber is matched (never a fixed sleep), then publishes the message every
100 ms until interrupted, so a subscriber that matched a little late still gets it.
"""

import json
import sys

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion
from rclpy.node import Node

from publisher_lib import run_node, wait_for_readers
from selavpr_msgs.msg import PlaceCandidate, PlaceRecognition, StageTiming


def to_time(ns: int) -> Time:
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


def to_pose(values: list[float]) -> Pose:
    x, y, z, qx, qy, qz, qw = values
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def build(spec: dict) -> PlaceRecognition:
    msg = PlaceRecognition()
    msg.header.stamp = to_time(spec["stamp_ns"])
    msg.header.frame_id = spec["camera_frame"]
    msg.map_id = spec["map_id"]
    msg.map_frame = spec["map_frame"]
    for cand in spec["candidates"]:
        msg.candidates.append(PlaceCandidate(
            place_id=cand["place_id"], place_stamp=to_time(cand["place_stamp_ns"]),
            pose=to_pose(cand["pose"]), has_pose=cand["has_pose"],
            global_similarity=cand["global_similarity"], rerank_score=cand["rerank_score"],
            global_rank=cand["global_rank"],
        ))
    msg.accepted = spec["accepted"]
    msg.confidence = spec["confidence"]
    msg.reject_reason = spec["reject_reason"]
    msg.matched_place_id = spec["matched_place_id"]
    msg.matched_place_stamp = to_time(spec["matched_place_stamp_ns"])
    msg.matched_pose.pose = to_pose(spec["matched_pose"])
    msg.matched_pose.covariance = spec["covariance"]
    msg.stages = [StageTiming(stage=name, ms=ms) for name, ms in spec["stages"]]
    msg.processing_ms = spec["processing_ms"]
    msg.latency_ms = spec["latency_ms"]
    return msg


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    topic = sys.argv[2]
    return run_node("place_recognition_publisher", lambda node: repeat(node, build(spec), topic))


def repeat(node: Node, msg: PlaceRecognition, topic: str) -> int:
    pub = node.create_publisher(PlaceRecognition, topic, 10)
    if not wait_for_readers(node, [pub], settle_s=0.0):
        return 1
    print("matched", flush=True)
    node.create_timer(0.1, lambda: pub.publish(msg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
