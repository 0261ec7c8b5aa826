"""Test process: a camera driver with camera info, and odometry in TF, from a JSON spec.

Usage: python camera_publisher.py SPEC.json
SPEC: {"topic", "frame_id", "rate", "camera_info" (CameraInfo fields or null),
       "base_frame", "odom_frame", "base_camera" ([x y z qx qy qz qw] or null: no TF),
       "frames": [{"image": file, "odom_base": [x y z qx qy qz qw]}]}
Per frame: odom -> base on /tf at the frame's stamp, CameraInfo and Image with that stamp; the
static base -> camera on /tf_static. Prints "sent <index> <stamp_ns>", then "done".
"""

from __future__ import annotations

import json
import sys
import time

import rclpy
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from publisher_lib import run_node, wait_for_readers
from selavpr_ros.io.images import encode_raw, read_image_file


def transform(parent: str, child: str, pose: list[float], stamp) -> TransformStamped:
    t = TransformStamped()
    t.header.stamp = stamp
    t.header.frame_id = parent
    t.child_frame_id = child
    tr, q = t.transform.translation, t.transform.rotation
    tr.x, tr.y, tr.z = pose[:3]
    q.x, q.y, q.z, q.w = pose[3:]
    return t


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    return run_node("test_camera_publisher", lambda node: drive(node, spec))


def drive(node: Node, spec: dict) -> int:
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_topic = spec["topic"]
    pub = node.create_publisher(Image, image_topic, qos)
    info_pub = node.create_publisher(CameraInfo, image_topic.rsplit("/", 1)[0] + "/camera_info",
                                     qos)
    tf = static = None
    if spec.get("base_camera") is not None:
        from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

        tf, static = TransformBroadcaster(node), StaticTransformBroadcaster(node)
        static.sendTransform(transform(spec["base_frame"], spec["frame_id"],
                                       spec["base_camera"], node.get_clock().now().to_msg()))
    images = []
    for frame in spec["frames"]:
        rgb = read_image_file(frame["image"])
        data, step = encode_raw(rgb, "rgb8")
        images.append(Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                            step=step, data=data))
    readers = [pub] if spec.get("camera_info") is None else [pub, info_pub]
    if not wait_for_readers(node, readers, settle_s=0.5):
        print("no subscribers", flush=True)
        return 1
    for i, (frame, msg) in enumerate(zip(spec["frames"], images, strict=True)):
        stamp = node.get_clock().now()
        if tf is not None:
            tf.sendTransform(transform(spec["odom_frame"], spec["base_frame"],
                                       frame["odom_base"], stamp.to_msg()))
        if spec.get("camera_info") is not None:
            info = CameraInfo(**spec["camera_info"])
            info.header.stamp = stamp.to_msg()
            info.header.frame_id = spec["frame_id"]
            info_pub.publish(info)
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = spec["frame_id"]
        pub.publish(msg)
        print(f"sent {i} {stamp.nanoseconds}", flush=True)
        rclpy.spin_once(node, timeout_sec=1.0 / spec["rate"])
        time.sleep(max(0.0, 1.0 / spec["rate"] - 0.05))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
