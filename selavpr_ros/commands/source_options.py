"""The command-line options of a frame source (``--bag`` or ``--images``), shared by commands."""

from __future__ import annotations

import argparse

from selavpr_ros.io.folders import DEFAULT_RATE_HZ, DEFAULT_SPACING_M
from selavpr_ros.io.sources import FrameSource


def add_source_arguments(parser: argparse.ArgumentParser, title: str, *,
                         folder_timing: bool = True) -> None:
    """Add the source options as a group named ``title``.

    ``folder_timing`` adds ``--rate`` and ``--frame-id`` for folder frames (a command that
    uses ``--rate`` for something else leaves them out and gets their defaults).
    """
    src = parser.add_argument_group(title)
    src.add_argument("--bag", help="rosbag2 directory (sqlite3 or mcap)")
    src.add_argument("--image-topic",
                     help="sensor_msgs/Image or CompressedImage topic (default: the only one)")
    src.add_argument("--pose-topic", help="Odometry, PoseStamped or PoseWithCovarianceStamped "
                                          "topic (default: the only one)")
    src.add_argument("--pose-tolerance", type=float, default=0.1, metavar="S",
                     help="max seconds between an image and the poses around it (default 0.1)")
    src.add_argument("--images", help="image folder (natural file-name order)")
    src.add_argument("--poses", help="CSV: file, timestamp, x, y, z[, qx, qy, qz, qw]; without "
                                     "it frames get pseudo-positions along x")
    src.add_argument("--spacing", type=float, default=DEFAULT_SPACING_M, metavar="M",
                     help=f"metres between pseudo-positions (default {DEFAULT_SPACING_M})")
    if folder_timing:
        src.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, metavar="HZ",
                         help="frame rate for stamps of a folder without timestamps "
                              f"(default {DEFAULT_RATE_HZ})")
        src.add_argument("--frame-id", default="camera", help="camera frame of folder images")
    src.add_argument("--camera-info-topic", help="the bag's sensor_msgs/CameraInfo topic "
                                                 "(default: the only one, if any)")
    src.add_argument("--depth-topic", help="the bag's registered depth image topic (16UC1 "
                                           "mm or 32FC1 m), matched to images by stamp")
    src.add_argument("--depth-folder", help="registered depth images named like the images "
                                            "(16-bit PNG mm, float32 TIFF/.npy m)")
    src.add_argument("--stride", type=int, default=1, metavar="N",
                     help="use every N-th frame of the source")
    src.add_argument("--limit", type=int, default=0, metavar="N",
                     help="stop after N frames of the source (after --stride)")


def source_from_args(args: argparse.Namespace, *, folder_timing: bool = True) -> FrameSource:
    """Make the :class:`FrameSource` that the options of :func:`add_source_arguments` give."""
    return FrameSource(bag=args.bag, image_topic=args.image_topic, pose_topic=args.pose_topic,
                       pose_tolerance_s=args.pose_tolerance, images=args.images,
                       poses=args.poses, spacing=args.spacing,
                       rate_hz=args.rate if folder_timing else DEFAULT_RATE_HZ,
                       frame_id=args.frame_id if folder_timing else "camera",
                       stride=args.stride, limit=args.limit,
                       camera_info_topic=getattr(args, "camera_info_topic", None),
                       depth_folder=getattr(args, "depth_folder", None),
                       depth_topic=getattr(args, "depth_topic", None))
