"""Ground truth for pose estimation: depth images and camera intrinsics of the synthetic camera.

Depth is the z coordinate in the camera's optical frame (distance along the optical axis, as a
``32FC1`` depth image holds it) of the surface each pixel's centre ray hits, computed by the
same ray-plane intersections the renderer uses (``render._plane_distances``), in metres; sky
pixels are +inf (REP 118: too far). It is cast at the pixel centres, not supersampled: depth is
not averaged across edges.

The camera is an ideal pinhole: the renderer's ray through pixel (i, j) has normalised optical
coordinates ((i + 0.5 - W/2) / f, (j + 0.5 - H/2) / f), i.e. the principal point is
(W/2 - 0.5, H/2 - 0.5) in the OpenCV/ROS convention (pixel centres at integers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from selavpr_ros.synthetic.render import (
    Camera,
    _body_rays,
    _building_at,
    _plane_distances,
    _rays,
)
from selavpr_ros.synthetic.route import RouteConfig, route_world, traversal_poses
from selavpr_ros.synthetic.world import World


def camera_info(camera: Camera) -> dict[str, Any]:
    """``sensor_msgs/CameraInfo`` fields of the synthetic camera (no distortion)."""
    f = float(camera.focal_px)
    cx, cy = camera.width / 2.0 - 0.5, camera.height / 2.0 - 0.5
    return {
        "width": camera.width,
        "height": camera.height,
        "distortion_model": "plumb_bob",
        "d": [0.0] * 5,
        "k": [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0],
        "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        "p": [f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
    }


def render_depth(
    world: World,
    position: tuple[float, float, float],
    yaw: float,
    camera: Camera,
    pitch: float = 0.0,
) -> np.ndarray:
    """(H, W) float32 depth in metres of the view :func:`render.render` draws; sky is +inf."""
    single = replace(camera, supersample=1)
    d = _rays(single, yaw, pitch)
    px, _, pz = (np.float32(v) for v in position)
    t_left, t_right, t_road = _plane_distances(world, position, d)
    dx, dy = d[0].ravel(), d[1].ravel()
    dist = np.full(dx.size, np.inf, np.float32)
    road = np.isfinite(t_road)
    ry = np.float32(position[1]) + t_road[road] * dy[road]
    idx = np.nonzero(road)[0][np.abs(ry) <= world.half_width]
    dist[idx] = t_road[idx]
    dz = d[2].ravel()
    for row, t in ((world.left, t_left), (world.right, t_right)):
        cand = np.nonzero(np.isfinite(t) & (t < dist))[0]
        if cand.size == 0:
            continue
        _, on = _building_at(row, px + t[cand] * dx[cand], pz + t[cand] * dz[cand])
        dist[cand[on]] = t[cand[on]]
    forward = _body_rays(single)[0]  # cosine between each ray and the optical axis
    return (dist.reshape(forward.shape) * forward).astype(np.float32)


def render_traversal_depth(config: RouteConfig, traversal: int,
                           world: World | None = None) -> Iterator[np.ndarray]:
    """Depth images of one traversal's frames, in the order of ``render_traversal``."""
    world = world or route_world(config)
    for _, position, yaw in traversal_poses(config, traversal):
        yield render_depth(world, position, yaw, config.camera)
