"""``selavpr make-bag FOLDER OUT``: an image folder as a rosbag2 drive (images + odometry).

Lets data sets be replayed like a robot drive (through the live node, or ``build-map --bag``).
Every image is written with its stamp (from the poses CSV, else ``--start + index / --rate``)
on the image topic, and an Odometry message with the same stamp carries its pose (the CSV's, or
the pseudo-position ``index * --spacing`` along x; identity orientation when unknown).
"""

from __future__ import annotations

import argparse

from selavpr_ros.io.folders import DEFAULT_RATE_HZ, DEFAULT_SPACING_M

RAW_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-bag",
        help="write an image folder (+ poses) into a rosbag2 with image and odometry topics",
        description=(
            "Write the images of FOLDER (natural file-name order) into a new rosbag2 OUT, with "
            "an Odometry message per image carrying its pose, stamped like a recorded drive."
        ),
    )
    parser.add_argument("folder", metavar="FOLDER", help="image folder")
    parser.add_argument("out", metavar="OUT", help="bag directory to create")
    parser.add_argument("--poses", help="CSV: file, timestamp, x, y, z[, qx, qy, qz, qw]")
    parser.add_argument("--format", default="raw", choices=("raw", "compressed"),
                        help="sensor_msgs/Image (raw) or CompressedImage (default raw)")
    parser.add_argument("--encoding", default="rgb8", choices=RAW_ENCODINGS,
                        help="raw image encoding (default rgb8)")
    parser.add_argument("--compression", default="jpeg", choices=("jpeg", "png"),
                        help="compressed image format (default jpeg)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE_HZ, metavar="HZ",
                        help=f"frame rate for stamps without timestamps (default "
                             f"{DEFAULT_RATE_HZ})")
    parser.add_argument("--start", type=str, default="0", metavar="S",
                        help="stamp of the first frame in seconds, without timestamps (default "
                             "0)")
    parser.add_argument("--spacing", type=float, default=DEFAULT_SPACING_M, metavar="M",
                        help=f"metres between pseudo-positions (default {DEFAULT_SPACING_M})")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"),
                        help="bag storage (default sqlite3)")
    parser.add_argument("--image-topic", default="",
                        help="default /camera/image_raw, or /camera/image_raw/compressed")
    parser.add_argument("--odom-topic", default="/odom", help="odometry topic (default /odom)")
    parser.add_argument("--camera-frame", default="camera", help="image frame_id")
    parser.add_argument("--odom-frame", default="odom", help="odometry header frame_id")
    parser.add_argument("--child-frame", default="base_link", help="odometry child_frame_id")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="first N images only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from selavpr_ros.errors import ConfigError, ImageDecodeError
    from selavpr_ros.io.bags import BagWriter
    from selavpr_ros.io.folders import FolderOptions, folder_frames, seconds_to_ns

    try:
        start_ns = seconds_to_ns(args.start)
    except ArithmeticError as err:
        raise ConfigError(f"--start must be seconds, got '{args.start}'") from err
    if not 1 <= args.quality <= 100:
        raise ConfigError(f"--quality must be 1..100, got {args.quality}")
    topic = args.image_topic or (
        "/camera/image_raw/compressed" if args.format == "compressed" else "/camera/image_raw")
    options = FolderOptions(poses=Path(args.poses) if args.poses else None, spacing=args.spacing,
                            rate_hz=args.rate, start_ns=start_ns, frame_id=args.camera_frame)
    written = skipped = 0
    first: int | None = None
    last = 0
    with BagWriter(args.out, args.storage) as writer:
        for frame in folder_frames(args.folder, options):
            if args.limit and written >= args.limit:
                break
            if frame.pose is None:
                print(f"skipping {frame.source_ref}: not in {args.poses}")
                skipped += 1
                continue
            try:
                rgb = frame.load()
            except ImageDecodeError as err:
                print(f"skipping {frame.source_ref}: {err}")
                skipped += 1
                continue
            if args.format == "compressed":
                writer.write_compressed_image(topic, frame.stamp_ns, rgb, frame.frame_id,
                                              args.compression, args.quality)
            else:
                writer.write_image(topic, frame.stamp_ns, rgb, frame.frame_id, args.encoding)
            writer.write_odometry(args.odom_topic, frame.pose, args.odom_frame, args.child_frame)
            written += 1
            first = frame.stamp_ns if first is None else first
            last = frame.stamp_ns
    span = (last - first) / 1e9 if first is not None else 0.0  # None until one was written
    print(f"wrote {args.out} ({args.storage}): {written} images on {topic} and {written} "
          f"odometry messages on {args.odom_topic}, {span:.2f} s"
          + (f"; skipped {skipped}" if skipped else ""))
    return 0
