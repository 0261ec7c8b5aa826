"""Synthetic routes: determinism, exact poses, projection geometry, writers, and a VPR check."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.errors import ConfigError
from selavpr_ros.synthetic import (
    LIGHTING,
    Camera,
    RouteConfig,
    Traversal,
    WorldConfig,
    make_world,
    render_route,
    render_traversal,
    write_bag,
    write_image_folder,
    write_route,
)
from selavpr_ros.synthetic.render import render

SMALL = RouteConfig(seed=3, frames=6, spacing_m=2.0, camera=Camera(width=96, height=72),
                    world=WorldConfig(length_m=60.0))


def test_same_seed_gives_identical_images_and_other_seeds_differ() -> None:
    a = render_route(SMALL)
    b = render_route(SMALL)
    c = render_route(dataclasses.replace(SMALL, seed=4))
    for t in range(2):
        for fa, fb, fc in zip(a[t], b[t], c[t], strict=True):
            assert fa.image.tobytes() == fb.image.tobytes()
            assert fa.stamp_ns == fb.stamp_ns and fa.position == fb.position
            assert not np.array_equal(fa.image, fc.image)
    # the two traversals of one route look different (lane, lighting, noise)
    assert np.abs(a[0][2].image.astype(int) - a[1][2].image.astype(int)).mean() > 10


def test_poses_are_exact_and_follow_the_traversal_settings() -> None:
    config = dataclasses.replace(SMALL, traversals=(
        Traversal(lateral_m=-2.0, phase_m=0.0, yaw_sway_deg=0.0),
        Traversal(lateral_m=1.5, phase_m=0.5, yaw_sway_deg=5.0, lighting="night",
                  start_offset_s=60.0),
    ))
    first, second = (list(render_traversal(config, t)) for t in range(2))
    for i, frame in enumerate(first):
        # x = 5 m + phase + i * spacing; stamps at 10 Hz from a fixed start
        assert frame.position == (5.0 + 2.0 * i, -2.0, 1.6)
        assert frame.orientation == (0.0, 0.0, 0.0, 1.0)  # no sway: looking along +x
        assert frame.stamp_ns == first[0].stamp_ns + i * 100_000_000
    for i, frame in enumerate(second):
        assert frame.position == (5.5 + 2.0 * i, 1.5, 1.6)
        assert frame.stamp_ns == first[0].stamp_ns + 60_000_000_000 + i * 100_000_000
        qx, qy, qz, qw = frame.orientation
        assert math.isclose(qx * qx + qy * qy + qz * qz + qw * qw, 1.0)
        assert abs(2 * math.atan2(qz, qw)) <= math.radians(5.0) + 1e-9
        assert frame.image.shape == (72, 96, 3) and frame.image.dtype == np.uint8


def test_roof_line_is_where_a_pinhole_camera_sees_it() -> None:
    # Facing the left facade (yaw 90 deg) from y = -2 in a 14 m street: the wall is 9 m away.
    # A 5 m high roof edge, 3.4 m above the camera, projects to row v = h/2 - f * 3.4 / 9 with
    # f = (w/2) / tan(hfov/2) = 160 px, i.e. v = 120 - 60.44 = 59.56 (pixel centres at +0.5).
    camera = Camera(width=320, height=240, hfov_deg=90.0)
    flat = dict(length_m=60.0, gap_probability=0.0, building_width_m=(8.0, 12.0))
    with_roof = make_world(1, WorldConfig(building_height_m=(5.0, 5.0), **flat))
    no_roof = make_world(1, WorldConfig(building_height_m=(0.001, 0.001), **flat))
    day = LIGHTING["day"]
    a = render(with_roof, (30.0, -2.0, 1.6), math.pi / 2, camera, day).astype(int)
    b = render(no_roof, (30.0, -2.0, 1.6), math.pi / 2, camera, day).astype(int)
    column = np.abs(a[:, 160] - b[:, 160]).sum(axis=1)
    first_wall_row = int(np.argmax(column > 0))
    assert first_wall_row in (59, 60)
    assert np.all(column[:59] == 0)


def test_folder_writer_matches_the_folder_reader(tmp_path: Path) -> None:
    from selavpr_ros.io.folders import FolderOptions, folder_frames

    frames = list(render_traversal(SMALL, 1))
    assert write_image_folder(frames, tmp_path / "t1") == len(frames)
    read = list(folder_frames(tmp_path / "t1", FolderOptions(poses=tmp_path / "t1" /
                                                             "poses.csv")))
    assert [r.source_ref for r in read] == [f.name for f in frames]
    for r, f in zip(read, frames, strict=True):
        assert r.pose is not None and r.pose.stamp_ns == f.stamp_ns
        assert r.pose.position == f.position
        assert np.allclose(r.pose.orientation, f.orientation, atol=1e-12)
        assert np.array_equal(r.load(), f.image)  # PNG is lossless
    with pytest.raises(ConfigError, match="not empty"):
        write_image_folder(frames, tmp_path / "t1")


def test_bag_writer_gives_images_with_odometry_at_the_same_stamps(tmp_path: Path) -> None:
    from selavpr_ros.io.bags import BagFrames

    frames = list(render_traversal(SMALL, 0))
    write_bag(frames, tmp_path / "t0_bag")
    with BagFrames(tmp_path / "t0_bag") as bag:
        assert bag.topics["/camera/image_raw"] == ("sensor_msgs/msg/Image", len(frames))
        assert bag.topics["/odom"] == ("nav_msgs/msg/Odometry", len(frames))
        poses, frame_id = bag.read_poses("/odom")
        assert frame_id == "odom"
        read = list(bag.frames("/camera/image_raw", poses, tolerance_ns=0))
    for r, f in zip(read, frames, strict=True):
        assert r.stamp_ns == f.stamp_ns and r.frame_id == "camera"
        assert r.pose is not None and np.allclose(r.pose.position, f.position)
        assert np.array_equal(r.load(), f.image)


def test_write_route_lays_out_every_traversal(tmp_path: Path) -> None:
    written = write_route(SMALL, tmp_path / "route", formats=("folder", "bag"),
                          compressed="png")
    assert [p.name for p in written["folder"]] == ["traversal_0", "traversal_1"]
    assert [p.name for p in written["bag"]] == ["traversal_0_bag", "traversal_1_bag"]
    assert len(list((tmp_path / "route" / "traversal_1").glob("*.png"))) == SMALL.frames
    assert (tmp_path / "route" / "route.json").is_file()
    with pytest.raises(ConfigError, match="formats"):
        write_route(SMALL, tmp_path / "x", formats=("video",))


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="outside"):
        RouteConfig(traversals=(Traversal(lateral_m=9.0),))
    with pytest.raises(ConfigError, match="lighting"):
        Traversal(lighting="noon")
    with pytest.raises(ConfigError):
        Camera(width=8)
    with pytest.raises(ConfigError):
        RouteConfig(frames=0)


def test_second_traversal_is_recognised_by_the_classical_extractor() -> None:
    """A meaningful VPR test: afternoon light, a lane 3 m over, other positions, noise."""
    from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor

    config = RouteConfig(seed=11, frames=50, spacing_m=2.0,
                         camera=Camera(width=160, height=120))
    mapped, revisit = render_route(config)
    extractor = ClassicalExtractor(ClassicalConfig(
        vocabulary_size=32, long_side=160, fit_descriptors_per_image=150,
        kmeans_iterations=10)).fit([f.image for f in mapped])
    g_map = extractor.extract([f.image for f in mapped]).global_desc
    g_query = extractor.extract([f.image for f in revisit]).global_desc
    p_map = np.array([f.position for f in mapped])
    p_query = np.array([f.position for f in revisit])
    best = np.argmax(g_query @ g_map.T, axis=1)
    correct = np.linalg.norm(p_query - p_map[best], axis=1) <= 5.0
    # chance: the fraction of map frames within 5 m of a query (5 of 50 here)
    chance = np.mean([(np.linalg.norm(p_map - p, axis=1) <= 5.0).mean() for p in p_query])
    assert chance < 0.12
    assert correct.mean() >= 0.5, correct.mean()
