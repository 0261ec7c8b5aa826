"""Image topics, one way for both nodes: message type by name, subscription QoS."""

from __future__ import annotations

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from selavpr_ros.errors import ConfigError

IMAGE_TYPES = ("auto", "raw", "compressed")
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}


def is_compressed(topic: str, image_type: str) -> bool:
    """Return True for CompressedImage: ``compressed``, or ``auto`` and the name says so.

    ``auto`` follows image_transport's naming (``.../compressed``).
    """
    if image_type not in IMAGE_TYPES:
        raise ConfigError(f"image_type must be one of {', '.join(IMAGE_TYPES)}, got "
                          f"'{image_type}'")
    if image_type == "auto":
        return topic.rstrip("/").endswith("/compressed")
    return image_type == "compressed"


def image_message_type(topic: str, image_type: str) -> type:
    """Return CompressedImage or Image for an image topic (see :func:`is_compressed`)."""
    return CompressedImage if is_compressed(topic, image_type) else Image


def subscription_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last QoS of the given reliability (best_effort matches any publisher)."""
    if reliability not in RELIABILITY:
        raise ConfigError(f"qos_reliability must be one of {', '.join(RELIABILITY)}, got "
                          f"'{reliability}'")
    if depth < 1:
        raise ConfigError(f"qos_depth must be at least 1, got {depth}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=RELIABILITY[reliability])
