"""Synthetic depth and camera intrinsics: exact against the street's planes."""

from __future__ import annotations

import math

import numpy as np

from selavpr_ros.geometry import CameraModel, feature_points
from selavpr_ros.geometry.transforms import OPTICAL_IN_BODY
from selavpr_ros.synthetic import LIGHTING, Camera, RouteConfig, WorldConfig, make_world
from selavpr_ros.synthetic.depth import camera_info, render_depth, render_traversal_depth
from selavpr_ros.synthetic.render import render
from selavpr_ros.synthetic.route import route_world, traversal_poses


def test_depth_back_projects_onto_the_street_planes() -> None:
    camera = Camera(width=96, height=72, hfov_deg=80.0, supersample=2)
    world = make_world(2, WorldConfig(length_m=80.0))
    position, yaw = (30.0, -2.0, 1.6), math.radians(25.0)
    depth = render_depth(world, position, yaw, camera)
    assert depth.shape == (72, 96) and depth.dtype == np.float32
    model = CameraModel.from_camera_info(camera_info(camera))
    assert model.fx == model.fy == camera.focal_px
    vv, uu = np.mgrid[0:72, 0:96]
    pixels = np.column_stack([uu.ravel(), vv.ravel()]).astype(np.float64)
    points = feature_points(depth, "32FC1", pixels, model).astype(np.float64)
    hit = np.all(np.isfinite(points), axis=1)
    assert 0.5 < hit.mean() < 1.0  # some sky above the roofs
    # optical -> body -> world
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ OPTICAL_IN_BODY
    world_pts = points[hit] @ rot.T + np.array(position)
    on_plane = np.minimum.reduce([np.abs(world_pts[:, 2]), np.abs(world_pts[:, 1] - 7.0),
                                  np.abs(world_pts[:, 1] + 7.0)])
    assert on_plane.max() < 1e-3  # every pixel's point lies on the road or a facade
    # no point: the sky (+inf) or a surface beyond the 100 m range of stored points
    missing = depth[~hit.reshape(72, 96)]
    assert np.all(missing > 100.0) and np.isinf(missing).mean() > 0.5
    assert not np.any(~hit.reshape(72, 96)[-20:])  # the lower rows see road or walls


def test_depth_by_hand_and_renders_unchanged() -> None:
    # facing the left facade (yaw 90 deg) from y = -2 in a 14 m street: the wall is 9 m away
    camera = Camera(width=64, height=48, hfov_deg=90.0)
    flat = dict(length_m=60.0, gap_probability=0.0, building_height_m=(8.0, 8.0))
    world = make_world(1, WorldConfig(**flat))
    depth = render_depth(world, (30.0, -2.0, 1.6), math.pi / 2, camera)
    assert np.allclose(depth[20:30, :], 9.0, atol=1e-4)
    # looking along the street: the road below the horizon at depth h / y_n
    depth = render_depth(world, (30.0, 0.0, 1.6), 0.0, camera)
    f = camera.focal_px
    v = 47
    assert math.isclose(depth[v, 32], 1.6 / ((v - 23.5) / f), rel_tol=1e-5)
    # the colour render of the same view is not affected by the depth helpers
    image = render(world, (30.0, 0.0, 1.6), 0.0, camera, LIGHTING["day"])
    assert image.shape == (48, 64, 3)


def test_traversal_depth_follows_the_traversal_poses() -> None:
    config = RouteConfig(seed=3, frames=3, spacing_m=2.0, camera=Camera(width=48, height=36))
    depths = list(render_traversal_depth(config, 1))
    world = route_world(config)
    assert len(depths) == 3
    for depth, (_, position, yaw) in zip(depths, traversal_poses(config, 1), strict=True):
        assert np.array_equal(depth, render_depth(world, position, yaw, config.camera))
