"""Write synthetic traversals where the map builder and the evaluation read drives from.

- An image folder: ``frame_00000.png ...`` plus ``poses.csv`` with the columns
  ``file, timestamp, x, y, z, qx, qy, qz, qw`` (timestamp in decimal seconds, exact to the ns),
  the format :mod:`selavpr_ros.io.folders` reads.
- A rosbag2: ``sensor_msgs/Image`` (rgb8) or ``sensor_msgs/CompressedImage`` (png/jpeg) on an
  image topic and ``nav_msgs/Odometry`` with the same stamp on an odometry topic; header stamps
  equal the bag's record times (written by :class:`selavpr_ros.io.bags.BagWriter`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

from selavpr_ros.errors import ConfigError
from selavpr_ros.synthetic.route import RouteConfig, SyntheticFrame, render_traversal, route_world

log = logging.getLogger(__name__)

POSES_HEADER = ("file", "timestamp", "x", "y", "z", "qx", "qy", "qz", "qw")
FORMATS = ("folder", "bag")


def stamp_text(stamp_ns: int) -> str:
    """Integer ns as exact decimal seconds, e.g. ``1700000000.100000000``."""
    return f"{stamp_ns // 1_000_000_000}.{stamp_ns % 1_000_000_000:09d}"


def write_image_folder(frames: Iterable[SyntheticFrame], folder: str | Path) -> int:
    """PNG images and ``poses.csv`` into a new (or empty) folder; returns the frame count."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"output folder {folder} is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(folder / "poses.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(POSES_HEADER)
        for frame in frames:
            bgr = cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(folder / frame.name), bgr):
                raise ConfigError(f"cannot write {folder / frame.name}")
            writer.writerow([frame.name, stamp_text(frame.stamp_ns),
                             *(repr(float(v)) for v in frame.position),
                             *(repr(float(v)) for v in frame.orientation)])
            count += 1
    return count


def write_bag(
    frames: Iterable[SyntheticFrame],
    path: str | Path,
    *,
    image_topic: str = "/camera/image_raw",
    odom_topic: str = "/odom",
    compressed: str = "",
    camera_frame: str = "camera",
    odom_frame: str = "odom",
    child_frame: str = "base_link",
    storage: str = "sqlite3",
    depths: Iterable[np.ndarray] | None = None,
    camera_info: dict | None = None,
    depth_topic: str = "/camera/depth/image_raw",
    camera_info_topic: str = "/camera/camera_info",
) -> int:
    """Write a rosbag2 with an image and an odometry message per frame; return the frame count.

    ``compressed`` = "" writes raw rgb8 ``Image``; "png" or "jpeg" writes ``CompressedImage``.
    ``depths`` (float32 metres per frame) adds 16UC1 depth images with the frames' stamps,
    ``camera_info`` (CameraInfo fields) a CameraInfo per frame.
    """
    from selavpr_ros.io.bags import BagWriter
    from selavpr_ros.io.poses import Pose

    if compressed not in ("", "png", "jpeg"):
        raise ConfigError(f"compressed must be '', 'png' or 'jpeg', got {compressed!r}")
    count = 0
    depth_iter = iter(depths) if depths is not None else None
    with BagWriter(path, storage=storage) as writer:
        for frame in frames:
            if camera_info is not None:
                writer.write_camera_info(camera_info_topic, frame.stamp_ns, camera_info,
                                         camera_frame)
            if depth_iter is not None:
                writer.write_depth(depth_topic, frame.stamp_ns, _depth_mm(next(depth_iter)),
                                   camera_frame)
            if compressed:
                writer.write_compressed_image(image_topic, frame.stamp_ns, frame.image,
                                              camera_frame, fmt=compressed)
            else:
                writer.write_image(image_topic, frame.stamp_ns, frame.image, camera_frame)
            pose = Pose(frame.stamp_ns, frame.position, frame.orientation)
            writer.write_odometry(odom_topic, pose, odom_frame, child_frame)
            count += 1
    return count


def write_route(
    config: RouteConfig,
    out_dir: str | Path,
    formats: Iterable[str] = ("folder",),
    **bag_options: object,
) -> dict[str, list[Path]]:
    """Render every traversal once and write it in each format under ``out_dir``.

    Layout: ``traversal_<i>/`` (image folder) and ``traversal_<i>_bag/`` (rosbag2), plus
    ``route.json`` describing the route. Returns the written paths by format.
    """
    formats = tuple(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ConfigError(f"formats must be some of {FORMATS}, got {formats}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = route_world(config)
    written: dict[str, list[Path]] = {fmt: [] for fmt in formats}
    for t in range(len(config.traversals)):
        frames = list(render_traversal(config, t, world))
        if "folder" in formats:
            folder = out / f"traversal_{t}"
            write_image_folder(frames, folder)
            written["folder"].append(folder)
        if "bag" in formats:
            bag = out / f"traversal_{t}_bag"  # a rosbag2 directory (".bag" means ROS 1)
            # bag_options are write_bag's own keyword options, passed through untyped
            write_bag(frames, bag, **bag_options)  # type: ignore[arg-type]
            written["bag"].append(bag)
        log.info("traversal %d: %d frames (%s)", t, len(frames), config.traversals[t].lighting)
    description = {
        "seed": config.seed,
        "frames": config.frames,
        "spacing_m": config.spacing_m,
        "rate_hz": config.rate_hz,
        "camera": asdict(config.camera),
        "world": asdict(config.world),
        "traversals": [asdict(t) for t in config.traversals],
        "pose_convention": "camera body (x forward, y left, z up) in the world frame",
    }
    (out / "route.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return written


def positions(frames: Iterable[SyntheticFrame]) -> np.ndarray:
    """(N, 3) positions of frames (for ground truth by distance)."""
    return np.array([f.position for f in frames], np.float64).reshape(-1, 3)


def _depth_mm(depth: np.ndarray) -> np.ndarray:
    """Turn metres into 16UC1 millimetres; no reading (inf, beyond 65.535 m) is 0."""
    ok = np.isfinite(depth) & (depth > 0) & (depth < 65.535)
    return np.where(ok, np.rint(depth * 1000.0), 0).astype(np.uint16)


def write_depth_folder(frames: Iterable[SyntheticFrame], depths: Iterable[np.ndarray],
                       folder: str | Path) -> int:
    """Write 16-bit PNG depth (16UC1 mm, 0 = none) named like the frames' images.

    ``depths`` are float32 metres (``synthetic.depth.render_traversal_depth``); sky (inf) and
    depths beyond 65.535 m become 0, "no reading", as a depth camera gives them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for frame, depth in zip(frames, depths, strict=True):
        if not cv2.imwrite(str(folder / frame.name), _depth_mm(depth)):
            raise ConfigError(f"cannot write {folder / frame.name}")
        count += 1
    return count


def write_camera_yaml(info: dict, path: str | Path) -> None:
    """Write CameraInfo fields as a ROS camera-calibration YAML (camera_calibration's)."""
    def matrix(rows: int, cols: int, data: list[float]) -> dict:
        return {"rows": rows, "cols": cols, "data": [float(v) for v in data]}

    import yaml

    Path(path).write_text(yaml.safe_dump({
        "image_width": int(info["width"]), "image_height": int(info["height"]),
        "camera_name": str(info.get("name", "synthetic")),
        "camera_matrix": matrix(3, 3, info["k"]),
        "distortion_model": str(info["distortion_model"]),
        "distortion_coefficients": matrix(1, len(info["d"]), info["d"]),
        "rectification_matrix": matrix(3, 3, info["r"]),
        "projection_matrix": matrix(3, 4, info["p"]),
    }, sort_keys=False), encoding="utf-8")
