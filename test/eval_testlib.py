"""A small real evaluation world: checkpoint, map, and a query bag with ground-truth odometry.

Random weights only recognise (nearly) identical images, so the queries are the map's own
images (re-sent at the places' poses, as JPEG in the compressed variant) plus novel images
far from every place, which have no positive and must count as negatives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import node_testlib
from map_build_testlib import make_checkpoint
from selavpr_ros.io.bags import BagWriter
from selavpr_ros.io.poses import Pose

PLACES = 8
NOVEL = 2
IMAGE_TOPIC = "/cam/image_raw"
POSE_TOPIC = "/odom"
START_NS = 2_000 * 10**9
PERIOD_NS = 100_000_000  # 10 Hz


def query_position(i: int) -> tuple[float, float, float]:
    """Place queries 0..PLACES-1 at their place (2 m to the side), novel ones 1 km away."""
    if i < PLACES:
        x, y, z = node_testlib.place_pose(i)[0]
        return (x, y + 2.0, z)
    return (1_000.0 + 40.0 * (i - PLACES), 500.0, 0.0)


def write_query_bag(path: Path, map_images: list[np.ndarray], compressed: bool = False) -> Path:
    """Write the query bag: frames 0..PLACES-1 show the map's places, the rest novel images.

    Odometry brackets every frame so each gets exactly its query position.
    """
    novel = node_testlib.place_images(NOVEL, seed=99)
    with BagWriter(path) as bag:
        for i, rgb in enumerate([*map_images, *novel]):
            stamp = START_NS + i * PERIOD_NS
            for dt in (-10_000_000, 10_000_000):
                bag.write_odometry(POSE_TOPIC, Pose(stamp + dt, query_position(i),
                                                    (0.0, 0.0, 0.0, 1.0)), "map", "base_link")
            if compressed:
                bag.write_compressed_image(IMAGE_TOPIC, stamp, rgb, "camera", "jpeg", 95)
            else:
                bag.write_image(IMAGE_TOPIC, stamp, rgb, "camera")
    return path


def make_world(root: Path) -> dict[str, Path]:
    checkpoint = make_checkpoint(root / "small.safetensors")
    images = node_testlib.place_images(PLACES, seed=3)
    map_path = node_testlib.build_map(root / "route.selavpr", checkpoint, images)
    bag = write_query_bag(root / "queries_bag", images)
    return {"checkpoint": checkpoint, "map": map_path, "bag": bag}
