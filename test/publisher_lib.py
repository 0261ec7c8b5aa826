"""What every test publisher process shares: start a node, wait for readers, spin until stopped.

The publishers run as separate processes (`python test/x_publisher.py ...`), so this module is
imported from the script's own folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.publisher import Publisher


def run_node(name: str, body: Callable[[Node], int]) -> int:
    """Run ``body`` on a new node, then spin (so late readers can still fetch) until stopped.

    A non-zero return from ``body`` ends the process at once with that status.
    """
    rclpy.init()
    node = rclpy.create_node(name)
    try:
        status = body(node)
        if status:
            return status
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def wait_for_readers(node: Node, publishers: Iterable[Publisher], settle_s: float = 0.2,
                     timeout_s: float = 60.0) -> bool:
    """Wait until every publisher has a matched reader, then ``settle_s`` more; False on timeout.

    Discovery is symmetric but not simultaneous: our writer can see the reader before the
    reader has matched us, and what is sent in between is lost to a volatile reader.
    """
    publishers = list(publishers)
    deadline = time.monotonic() + timeout_s
    while any(p.get_subscription_count() == 0 for p in publishers):
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.02)
    time.sleep(settle_s)
    return True
