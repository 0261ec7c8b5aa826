"""The map-builder node: records keyframes from live image and pose topics into a place map.

For now it only starts, logs and spins; live map building arrives with the map-building work
(see README, Status).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from selavpr_ros import __version__
from selavpr_ros.nodes.runtime import run_node


class MapBuilderNode(Node):
    """Builds a place map from an image topic and a pose topic."""

    def __init__(self) -> None:
        super().__init__("map_builder_node")
        self.declare_parameter("map_path", "")
        self.get_logger().info(
            f"selavpr_ros {__version__} map_builder_node started; map building not wired yet"
        )


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``map_builder_node`` executable."""
    return run_node(MapBuilderNode, args)


if __name__ == "__main__":
    sys.exit(main())
