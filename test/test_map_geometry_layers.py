"""Optional map layers for query poses: the camera model and per-place 3-D points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.errors import MapFormatError
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.map import PlaceMap
from test_map import INFO, make_features, make_places

CAMERA = CameraModel.pinhole(64, 48, 40.0, name="front")


def test_camera_and_points_round_trip(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "m", INFO, camera=CAMERA)
    pts = np.random.default_rng(0).uniform(1, 20, (3, 16, 3)).astype(np.float32)
    pts[1, 5] = np.nan  # no depth at one feature
    pm.append(make_features(0, 3), make_places(0, 3), points=pts)
    pm.append(make_features(3, 2), make_places(3, 2))  # a commit without depth
    pm.close()
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        assert pm.camera is not None and pm.camera.same_as(CAMERA)
        assert pm.has_points
        got = pm.points([4, 1, 0])
        assert got.dtype == np.float16 and got.shape == (3, 16, 3)
        assert np.all(np.isnan(got[0]))  # place 4: committed without points
        assert np.all(np.isnan(got[1, 5])) and np.isfinite(got[1, 4]).all()
        # fp16: 11 significant bits, so within 20 m * 2^-11 of the stored float32
        assert np.allclose(got[2].astype(np.float32), pts[0], atol=20 * 2**-10)
    files = json.loads((tmp_path / "m" / "manifest.json").read_text())["segments"][0]["files"]
    assert "points" in files


def test_map_without_layers_still_opens(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "m", INFO)
    pm.append(make_features(0, 2), make_places(0, 2))
    pm.close()
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert "camera" not in manifest
    with PlaceMap.open(tmp_path / "m") as pm:
        assert pm.camera is None and not pm.has_points
        assert np.all(np.isnan(pm.points([0, 1])))


def test_set_camera_once(tmp_path: Path) -> None:
    with PlaceMap.create(tmp_path / "m", INFO) as pm:
        pm.append(make_features(0, 2), make_places(0, 2))
        pm.set_camera(CAMERA)
        pm.set_camera(CAMERA)  # the same again: nothing to do
        with pytest.raises(MapFormatError, match="another camera model"):
            pm.set_camera(CameraModel.pinhole(64, 48, 50.0))
        assert pm.search(make_features(0, 1).global_desc, 1).ids[0, 0] == 0
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        assert pm.camera is not None and pm.camera.fx == 40.0


def test_damaged_layers_are_refused(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "m", INFO, camera=CAMERA)
    with pytest.raises(ValueError, match="points are"):
        pm.append(make_features(0, 2), make_places(0, 2), points=np.zeros((2, 16, 2)))
    pm.append(make_features(0, 2), make_places(0, 2), points=np.ones((2, 16, 3)))
    pm.close()
    path = tmp_path / "m" / "manifest.json"
    good = path.read_text()
    data = json.loads(good)
    data["camera"]["k"][0] = -1.0
    path.write_text(json.dumps(data))
    with pytest.raises(MapFormatError, match="invalid field 'camera'.*focal"):
        PlaceMap.open(tmp_path / "m")
    data = json.loads(good)
    data["segments"][0]["files"]["points"]["name"] = "../outside.npy"
    path.write_text(json.dumps(data))
    with pytest.raises(MapFormatError):
        PlaceMap.open(tmp_path / "m")
    path.write_text(good)
    points_file = next((tmp_path / "m").glob("points-*.npy"))
    points_file.write_bytes(points_file.read_bytes()[:-8])
    with pytest.raises(MapFormatError, match="truncated"):
        PlaceMap.open(tmp_path / "m")
