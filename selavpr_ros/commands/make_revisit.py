"""``selavpr make-revisit OUT``: the synthetic revisit drive as a rosbag2, to reproduce loops.

The drive of ``bench/bench_loops.py`` and the loop tests (:mod:`selavpr_ros.synthetic.revisit`):
pass one, an unseen return loop (odometry only), pass two 3 m to the side in other light. The
bag holds images and odometry, optionally CameraInfo and registered depth (32FC1) for relative
poses; replay it through ``loop_closure_node`` or score it with
``selavpr evaluate-loops --bag OUT --radius 10``.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-revisit", help="write the synthetic revisit drive (loop closure) as a rosbag2",
        description="Render the synthetic drive that revisits its route (two passes joined by "
                    "an unseen return loop) into a new rosbag2 OUT.")
    parser.add_argument("out", metavar="OUT", help="bag directory to create")
    parser.add_argument("--frames", type=int, default=60, help="frames per pass (default 60)")
    parser.add_argument("--seed", type=int, default=11, help="world seed (default 11)")
    parser.add_argument("--spacing", type=float, default=2.0, metavar="M",
                        help="metres between frames (default 2)")
    parser.add_argument("--rate", type=float, default=2.0, metavar="HZ",
                        help="frame rate (default 2)")
    parser.add_argument("--width", type=int, default=320, help="image width (default 320)")
    parser.add_argument("--height", type=int, default=240, help="image height (default 240)")
    parser.add_argument("--camera-info", action="store_true",
                        help="also write sensor_msgs/CameraInfo on /camera/camera_info")
    parser.add_argument("--depth", action="store_true",
                        help="also write 32FC1 depth on /camera/depth/image_raw (implies "
                             "--camera-info)")
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"),
                        help="bag storage (default sqlite3)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from selavpr_ros.synthetic import Camera, RouteConfig
    from selavpr_ros.synthetic.revisit import revisit_depths, revisit_drive, write_revisit_bag

    route = RouteConfig(seed=args.seed, frames=args.frames, spacing_m=args.spacing,
                        rate_hz=args.rate, camera=Camera(width=args.width, height=args.height))
    drive = revisit_drive(route)
    depths = revisit_depths(route, drive) if args.depth else None
    camera = route.camera if args.camera_info or args.depth else None
    count = write_revisit_bag(drive, args.out, camera=camera, depths=depths,
                              storage=args.storage)
    extras = [t for t, on in (("camera info", camera is not None), ("depth", depths))
              if on]
    print(f"wrote {args.out} ({args.storage}): {count} images on /camera/image_raw"
          f"{' with ' + ' and '.join(extras) if extras else ''}, odometry on /odom incl. "
          f"{len(drive.return_poses)} on the unseen return loop; pass two revisits pass one "
          f"{abs(route.traversals[1].lateral_m - route.traversals[0].lateral_m):g} m to the "
          "side (score with: selavpr evaluate-loops --bag OUT --radius 10)")
    return 0
