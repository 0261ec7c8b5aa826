"""Process entry helpers shared by the nodes: init, spin, clean shutdown, one-line errors.

A node that cannot start (bad map, bad checkpoint, bad parameter) must say so in one log line
and exit non-zero, not print a traceback; Ctrl-C and SIGTERM must end it with status 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node

from selavpr_ros.errors import SelaVPRError


def run_node(
    make_node: Callable[[], Node], args: Sequence[str] | None = None, num_threads: int = 2
) -> int:
    """Create the node with ``make_node`` and spin it until shutdown; return the exit status."""
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: Node | None = None
    try:
        try:
            node = make_node()
        except (SelaVPRError, ParameterException) as err:
            rclpy.logging.get_logger("selavpr_ros").fatal(f"cannot start: {err}")
            return 1
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
