"""A single drive that revisits its route: pass one, an unseen return loop, pass two.

Pass two is the route's second traversal (another lateral offset and light); between the two
passes the robot drives back along a parallel street where the camera records nothing, so the
odometry is continuous and every pass-two frame revisits pass-one frames a few metres away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.io.poses import Pose
from selavpr_ros.synthetic.depth import render_depth
from selavpr_ros.synthetic.render import Camera, yaw_quaternion
from selavpr_ros.synthetic.route import RouteConfig, SyntheticFrame, render_traversal, route_world

RETURN_Y_M = 40.0  # the parallel street of the return loop


@dataclass(frozen=True)
class RevisitDrive:
    """Frames (with images) of both passes and the odometry of the return loop, in time order."""

    frames: list[SyntheticFrame]  # pass one then pass two; ``traversal`` tells them apart
    return_poses: list[Pose]  # odometry without images between the passes


def _line(start: tuple[float, float], end: tuple[float, float], step: float
          ) -> list[tuple[float, float, float]]:
    (x0, y0), (x1, y1) = start, end
    n = max(1, int(math.ceil(math.dist(start, end) / step)))
    yaw = math.atan2(y1 - y0, x1 - x0)
    return [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n, yaw) for i in range(1, n + 1)]


def revisit_drive(config: RouteConfig) -> RevisitDrive:
    """Render traversal 0, a return loop, then traversal 1 as one continuous drive."""
    if len(config.traversals) < 2:
        raise ConfigError("a revisit drive needs a route with two traversals")
    config = replace(config, traversals=(replace(config.traversals[0], start_offset_s=0.0),
                                         *config.traversals[1:]))
    world = route_world(config)
    first = list(render_traversal(config, 0, world))
    period_ns = int(round(1e9 / config.rate_hz))
    end = first[-1]
    second_start_x = 5.0 + config.traversals[1].phase_m
    y1 = config.traversals[1].lateral_m
    corners = [(end.position[0], end.position[1]), (end.position[0], RETURN_Y_M),
               (second_start_x - 10.0, RETURN_Y_M), (second_start_x - 10.0, y1),
               (second_start_x - config.spacing_m, y1)]
    stamp = end.stamp_ns
    z = config.camera_height_m
    return_poses = []
    for a, b in zip(corners, corners[1:], strict=False):
        for x, y, yaw in _line(a, b, config.spacing_m):
            stamp += period_ns
            return_poses.append(Pose(stamp, (x, y, z), yaw_quaternion(yaw)))
    shift = stamp + period_ns  # pass two continues right after the return loop
    second = []
    offset_ns = None
    for f in render_traversal(config, 1, world):
        if offset_ns is None:
            offset_ns = shift - f.stamp_ns
        second.append(SyntheticFrame(1, len(first) + f.index, f.stamp_ns + offset_ns,
                                     f.position, f.orientation, f.yaw, f.image))
    return RevisitDrive(first + second, return_poses)


def revisit_depths(config: RouteConfig, drive: RevisitDrive) -> list[np.ndarray]:
    """Depth images (32FC1 metres, sky +inf) of the drive's frames, in ``drive.frames`` order."""
    world = route_world(config)
    return [render_depth(world, f.position, f.yaw, config.camera) for f in drive.frames]


def write_revisit_bag(drive: RevisitDrive, path: str, *, image_topic: str = "/camera/image_raw",
                      odom_topic: str = "/odom", camera_frame: str = "camera",
                      odom_frame: str = "odom", child_frame: str = "base_link",
                      camera: Camera | None = None, depths: list[np.ndarray] | None = None,
                      camera_info_topic: str = "/camera/camera_info",
                      depth_topic: str = "/camera/depth/image_raw",
                      storage: str = "sqlite3") -> int:
    """Write the drive as a rosbag2 (images + odometry per frame, odometry on the return).

    With ``camera``, a CameraInfo per image; with ``depths`` (one per frame, metres), a
    registered 32FC1 depth image per image, both with the image's stamp.
    """
    from selavpr_ros.io.bags import BagWriter
    from selavpr_ros.synthetic.depth import camera_info

    info = camera_info(camera) if camera is not None else None
    depth_of = {f.stamp_ns: d for f, d in zip(drive.frames, depths or [], strict=False)}

    items: list[tuple[int, SyntheticFrame | Pose]] = [(f.stamp_ns, f) for f in drive.frames]
    items += [(p.stamp_ns, p) for p in drive.return_poses]
    items.sort(key=lambda item: item[0])
    with BagWriter(path, storage) as writer:
        for stamp, item in items:
            if isinstance(item, SyntheticFrame):
                if info is not None:
                    writer.write_camera_info(camera_info_topic, stamp, info, camera_frame)
                if stamp in depth_of:
                    writer.write_depth(depth_topic, stamp, depth_of[stamp], camera_frame,
                                       "32FC1")
                writer.write_image(image_topic, stamp, item.image, camera_frame)
                item = Pose(stamp, item.position, item.orientation)
            writer.write_odometry(odom_topic, item, odom_frame, child_frame)
    return len(drive.frames)
