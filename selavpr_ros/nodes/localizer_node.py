"""The localizer node: camera frames in, recognised places and poses out.

For now it only starts, declares its topics' parameters, logs and spins; the localization
pipeline is wired in by the localizer-node work (see README, Status).
"""

from __future__ import annotations

import sys

from rclpy.node import Node

from selavpr_ros import __version__
from selavpr_ros.nodes.runtime import run_node


class LocalizerNode(Node):
    """Subscribes to a camera topic and publishes ``selavpr_msgs/PlaceRecognition``."""

    def __init__(self) -> None:
        super().__init__("localizer_node")
        self.declare_parameter("map_path", "")
        self.declare_parameter("image_topic", "/camera/image_raw")
        self.get_logger().info(
            f"selavpr_ros {__version__} localizer_node started "
            f"(map_path='{self.get_parameter('map_path').value}'); localization not wired yet"
        )


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``localizer_node`` executable."""
    return run_node(LocalizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
