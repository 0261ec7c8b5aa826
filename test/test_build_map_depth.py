"""``selavpr build-map`` with camera info and depth: camera model and 3-D points in the map.

A synthetic drive written as an image folder with 16-bit PNG depth and a calibration YAML; the
stored points are checked against the depth images read directly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from selavpr_ros.cli import main as cli
from selavpr_ros.map import PlaceMap
from selavpr_ros.synthetic import Camera, RouteConfig
from selavpr_ros.synthetic.depth import camera_info, render_traversal_depth
from selavpr_ros.synthetic.route import render_traversal, route_world
from selavpr_ros.synthetic.writers import (
    write_camera_yaml,
    write_depth_folder,
    write_image_folder,
)

ROUTE = RouteConfig(seed=3, frames=6, spacing_m=2.0, camera=Camera(width=160, height=120))


@pytest.fixture(scope="module")
def drive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("depth_drive")
    world = route_world(ROUTE)
    frames = list(render_traversal(ROUTE, 0, world))
    write_image_folder(frames, root / "images")
    write_depth_folder(frames, render_traversal_depth(ROUTE, 0, world), root / "depth")
    write_camera_yaml(camera_info(ROUTE.camera), root / "camera.yaml")
    return root


def build(drive: Path, target: Path, *extra: str) -> int:
    return cli(["build-map", str(target), "--images", str(drive / "images"), "--poses",
                str(drive / "images" / "poses.csv"), "--extractor", "classical",
                "--min-distance", "0", "--no-progress", *extra])


def test_points_match_the_depth_images(drive: Path, tmp_path: Path) -> None:
    assert build(drive, tmp_path / "m", "--camera-info", str(drive / "camera.yaml"),
                 "--depth-folder", str(drive / "depth")) == 0
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        camera = pm.camera
        assert camera is not None and (camera.width, camera.height) == (160, 120)
        assert pm.has_points and pm.count == ROUTE.frames
        keypoints = pm.features(range(pm.count)).keypoints
        points = pm.points(range(pm.count)).astype(np.float32)
        places = pm.places(range(pm.count))
    for place, kp, pts in zip(places, keypoints, points, strict=True):
        mm = cv2.imread(str(drive / "depth" / place.source_ref), cv2.IMREAD_UNCHANGED)
        u = np.rint(kp[:, 0]).astype(int)
        v = np.rint(kp[:, 1]).astype(int)
        z = mm[v, u].astype(np.float32) / 1000.0
        valid = z > 0
        assert valid.mean() > 0.3  # facades and ground in view
        assert np.all(np.isnan(pts[~valid]))
        # fp16 keeps 11 significant bits: 2^-10 relative
        assert np.allclose(pts[valid, 2], z[valid], rtol=2e-3, atol=1e-3)
        # the x/y of a point lie on the pixel's ray: x = (u - cx) z / fx
        x = (kp[valid, 0] - camera.k[0, 2]) * z[valid] / camera.fx
        assert np.allclose(pts[valid, 0], x, rtol=2e-3, atol=2e-3)


def test_bad_depth_is_logged_and_the_place_kept(drive: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    depth = tmp_path / "depth"
    depth.mkdir()
    for f in (drive / "depth").iterdir():
        (depth / f.name).write_bytes(f.read_bytes())
    names = sorted(p.name for p in depth.iterdir())
    cv2.imwrite(str(depth / names[1]), np.zeros((50, 160), np.uint16))  # wrong size
    (depth / names[2]).unlink()
    np.save(depth / (Path(names[2]).stem + ".npy"), np.zeros((120, 160), np.float64))
    with caplog.at_level(logging.WARNING):
        assert build(drive, tmp_path / "m", "--camera-info", str(drive / "camera.yaml"),
                     "--depth-folder", str(depth)) == 0
    said = [r.getMessage() for r in caplog.records if "stored without depth" in r.getMessage()]
    assert len(said) == 2, said
    assert any("not registered" in s for s in said) and any("float64" in s for s in said)
    with PlaceMap.open(tmp_path / "m") as pm:
        assert pm.count == ROUTE.frames
        points = pm.points(range(pm.count))
    missing = [i for i in range(pm.count) if np.all(np.isnan(points[i]))]
    assert missing == [1, 2]


def test_depth_without_camera_info_is_refused_in_one_line(
        drive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build(drive, tmp_path / "m", "--depth-folder", str(drive / "depth")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--camera-info" in err[0]
    assert not (tmp_path / "m").exists()  # nothing half-built left behind
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_width: 160\n")
    assert build(drive, tmp_path / "m", "--camera-info", str(bad)) == 2
    assert "lacks" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_with_camera_info_and_depth_topics(tmp_path: Path, storage: str) -> None:
    from selavpr_ros.synthetic.writers import write_bag

    world = route_world(ROUTE)
    frames = list(render_traversal(ROUTE, 0, world))
    depths = list(render_traversal_depth(ROUTE, 0, world))
    depths[2] = depths[2][:60]  # a depth image of the wrong size: that place has no points
    write_bag(frames, tmp_path / "bag", storage=storage, depths=depths,
              camera_info=camera_info(ROUTE.camera))
    assert cli(["build-map", str(tmp_path / "m"), "--bag", str(tmp_path / "bag"),
                "--image-topic", "/camera/image_raw", "--depth-topic", "/camera/depth/image_raw",
                "--extractor", "classical",
                "--min-distance", "0", "--no-progress"]) == 0
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        assert pm.camera is not None and pm.camera.fx == camera_info(ROUTE.camera)["k"][0]
        keypoints = pm.features(range(pm.count)).keypoints
        points = pm.points(range(pm.count)).astype(np.float32)
    assert len(points) == ROUTE.frames
    assert np.all(np.isnan(points[2]))
    for i in (0, 1, 3):
        kp = keypoints[i]
        z = depths[i][np.rint(kp[:, 1]).astype(int), np.rint(kp[:, 0]).astype(int)]
        z_mm = np.where(np.isfinite(z) & (z < 65.535), np.rint(z * 1000) / 1000, np.nan)
        valid = np.isfinite(z_mm)
        assert valid.mean() > 0.3
        assert np.allclose(points[i][valid, 2], z_mm[valid], rtol=2e-3, atol=1e-3)
        assert np.all(np.isnan(points[i][~valid]))
