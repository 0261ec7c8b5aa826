"""selavpr_ros: SelaVPR visual place recognition for ROS 2.

The top-level package only carries the version: importing it must stay cheap and free of
side effects (no torch, faiss or rclpy), so that tools and nodes import only what they use.
"""

__version__ = "0.1.0"
