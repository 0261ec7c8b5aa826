"""Test process that replays a rosbag2 over DDS, as ``ros2 bag play`` would (RELIABLE QoS).

Usage: python bag_publisher.py BAG [--pause-at NS --resume-file PATH] [--rate HZ_SCALE]
Waits for a subscriber on every topic, publishes every message (serialized bytes, in recording
order). With --pause-at it stops before the first message recorded at or after NS, prints
"paused", and continues once PATH exists. Prints "done" at the end and spins until stopped.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader

from publisher_lib import run_node, wait_for_readers


def msg_class(msgtype: str) -> type:
    pkg, sub, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{sub}"), name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bag")
    parser.add_argument("--pause-at", type=int, default=0)
    parser.add_argument("--resume-file", default="")
    args = parser.parse_args()
    return run_node("bag_publisher", lambda node: play(node, args))


def play(node: Node, args: argparse.Namespace) -> int:
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                     reliability=ReliabilityPolicy.RELIABLE)
    with Reader(Path(args.bag)) as reader:
        pubs = {c.id: node.create_publisher(msg_class(c.msgtype), c.topic, qos)
                for c in reader.connections}
        if not wait_for_readers(node, pubs.values()):
            print("no subscribers", flush=True)
            return 1
        paused = False
        for conn, stamp, raw in reader.messages():
            if args.pause_at and not paused and stamp >= args.pause_at:
                for p in pubs.values():
                    p.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
                print("paused", flush=True)
                while not Path(args.resume_file).exists():
                    rclpy.spin_once(node, timeout_sec=0.05)
                paused = True
            pubs[conn.id].publish(bytes(raw))
            time.sleep(0.002)
        for p in pubs.values():
            p.wait_for_all_acked(rclpy.duration.Duration(seconds=10))
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
