"""Test process that publishes camera frames from image files, as a camera driver would.

Usage: python image_publisher.py --topic T [--compressed FMT] [--encoding E] [--rate HZ]
                                 [--reliable] ITEM [ITEM ...]
ITEM is an image file, or one of the bad frames BAD:corrupt, BAD:unsupported, BAD:empty.
It waits for a matched subscriber, publishes every item once (stamped with the current time)
and prints "sent <index> <stamp_ns>" per frame, then "done" and keeps spinning until stopped.
"""

from __future__ import annotations

import argparse
import sys
import time

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from publisher_lib import run_node, wait_for_readers
from selavpr_ros.io.images import encode_compressed, encode_raw, read_image_file


def make_message(item: str, args: argparse.Namespace):
    if args.compressed:
        msg = CompressedImage(format=args.compressed)
        if item == "BAD:corrupt":
            msg.data = b"\xff\xd8\xff\xe0 this is not a jpeg" * 10
        elif item == "BAD:empty":
            msg.data = b""
        elif item == "BAD:unsupported":
            msg.format = "16UC1; compressedDepth png"
            msg.data = encode_compressed(read_image_file(args.fallback), "png")
        else:
            msg.data = encode_compressed(read_image_file(item), args.compressed)
        return msg
    if item.startswith("BAD:"):
        msg = Image(height=4, width=4, encoding=args.encoding, step=12, data=bytes(48))
        if item == "BAD:corrupt":
            msg.data = bytes(20)  # shorter than height * step
        elif item == "BAD:empty":
            msg.height = msg.width = msg.step = 0
            msg.data = b""
        else:
            msg.encoding = "32FC1"
        return msg
    rgb = read_image_file(item)
    data, step = encode_raw(rgb, args.encoding)
    return Image(height=rgb.shape[0], width=rgb.shape[1], encoding=args.encoding, step=step,
                 data=data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--compressed", default="", help="jpeg or png: publish CompressedImage")
    parser.add_argument("--encoding", default="rgb8")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second (0: max)")
    parser.add_argument("--reliable", action="store_true")
    parser.add_argument("--frame-id", default="test_camera")
    parser.add_argument("items", nargs="+")
    args = parser.parse_args()
    args.fallback = next((i for i in args.items if not i.startswith("BAD:")), None)

    return run_node("test_image_publisher", lambda node: send(node, args))


def send(node: Node, args: argparse.Namespace) -> int:
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if args.reliable
                     else ReliabilityPolicy.BEST_EFFORT)
    pub = node.create_publisher(CompressedImage if args.compressed else Image, args.topic, qos)
    messages = [make_message(item, args) for item in args.items]
    if not wait_for_readers(node, [pub]):
        print("no subscribers", flush=True)
        return 1
    for i, msg in enumerate(messages):
        stamp = node.get_clock().now()
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = args.frame_id
        pub.publish(msg)
        print(f"sent {i} {stamp.nanoseconds}", flush=True)
        if args.rate > 0:
            time.sleep(1.0 / args.rate)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
