"""The pose layers under main's compact formats: strided grids, merged maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.geometry.correspondences import mnn_pairs
from selavpr_ros.geometry.observations import ImageFeatures, observe_place
from selavpr_ros.geometry.pixels import grid_pixels
from selavpr_ros.map import PlaceMap
from selavpr_ros.map.local_format import LocalCodec, LocalFormat
from selavpr_ros.map.merge import merge_maps
from test_map_formats import INFO, C, places, route_features

CAMERA = CameraModel.pinhole(64, 48, 40.0, name="front")
# GRID is 8x8: stride 2 keeps rows and columns 0, 2, 4, 6
KEPT = np.array([r * 8 + c for r in (0, 2, 4, 6) for c in (0, 2, 4, 6)])


def grid_points(n: int) -> np.ndarray:
    """(n, 64, 3) points whose x encodes the grid cell, so a wrong cell shows."""
    pts = np.zeros((n, 64, 3), np.float32)
    pts[:, :, 0] = np.arange(64)
    pts[:, :, 2] = 1.0 + np.arange(n)[:, None]
    return pts


def test_points_are_stored_on_the_strided_grid(tmp_path: Path) -> None:
    pm = PlaceMap.create(tmp_path / "m", INFO, camera=CAMERA,
                         local_format=LocalFormat.parse("fp16", 2))
    pm.append(route_features(3), places(3), points=grid_points(3))
    pm.close()
    with PlaceMap.open(tmp_path / "m", verify=True) as pm:
        got = pm.points([2, 0])
        assert got.shape == (2, 16, 3)
        assert np.array_equal(got[:, :, 0].astype(np.int64), np.stack([KEPT, KEPT]))
        assert np.all(got[0, :, 2] == 3.0) and np.all(got[1, :, 2] == 1.0)


def test_observations_on_a_strided_grid_use_the_kept_cells() -> None:
    # a SelaVPR-like grid (sides 4 * tokens - 3); stride 2 keeps rows/columns 0, 2, ..., 8
    info = ExtractorInfo("fake-grid9", "w", global_dim=16, local_count=81, local_dim=C,
                         local_grid=(9, 9))
    kept = np.array([r * 9 + c for r in range(0, 9, 2) for c in range(0, 9, 2)])
    assert np.array_equal(LocalCodec(LocalFormat.parse("fp16", 2), info).kept_indices(), kept)
    rng = np.random.default_rng(3)
    stored = rng.standard_normal((len(kept), C)).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    points = np.zeros((len(kept), 3), np.float32)
    points[:, 0], points[:, 2] = kept, 1.0  # x of a point = its grid cell
    hw = (48, 64)
    query = ImageFeatures(stored, None, None, hw, None, kept)
    place = ImageFeatures(stored, None, None, hw, points, kept)
    obs = observe_place(info, query, place, mnn_pairs(stored, stored), 0, (0.0, 0.0, 0.0),
                        (0.0, 0.0, 0.0, 1.0), CAMERA)
    assert len(obs.query_pixels) >= 20  # identical features: (nearly) every one a mutual pair
    assert obs.place_points is not None
    cells = np.asarray(obs.place_points)[:, 0].astype(np.int64)
    assert set(cells.tolist()) <= set(kept.tolist())
    assert np.allclose(obs.place_pixels, grid_pixels((9, 9), hw, cells), atol=1e-9)
    assert np.allclose(obs.query_pixels, grid_pixels((9, 9), hw, cells), atol=1e-9)


def test_merge_carries_camera_and_points(tmp_path: Path) -> None:
    a = PlaceMap.create(tmp_path / "a", INFO, camera=CAMERA)
    a.append(route_features(2, seed=1), places(2), points=grid_points(2))
    a.append(route_features(2, seed=2), places(2, 2))  # a commit without depth
    a.close()
    b = PlaceMap.create(tmp_path / "b", INFO, camera=CAMERA)
    b.append(route_features(3, seed=3), places(3, 4), points=grid_points(3))
    b.close()
    merge_maps(tmp_path / "ab", [tmp_path / "a", tmp_path / "b"])
    with PlaceMap.open(tmp_path / "ab", verify=True) as pm:
        assert pm.count == 7
        assert pm.camera is not None and pm.camera.same_as(CAMERA)
        got = pm.points(range(7)).astype(np.float32)
        assert np.all(np.isnan(got[2:4]))  # a's commit without depth stays without
        assert np.array_equal(got[[0, 1, 4, 5, 6], :, 2], np.repeat(
            np.array([1.0, 2.0, 1.0, 2.0, 3.0])[:, None], 64, axis=1))


def test_merge_refuses_different_cameras(tmp_path: Path) -> None:
    for name, camera in (("a", CAMERA), ("b", CameraModel.pinhole(64, 48, 50.0))):
        pm = PlaceMap.create(tmp_path / name, INFO, camera=camera)
        pm.append(route_features(2), places(2))
        pm.close()
    with pytest.raises(MapFormatError, match="camera model") as err:
        merge_maps(tmp_path / "ab", [tmp_path / "a", tmp_path / "b"])
    assert "\n" not in str(err.value)
    assert not (tmp_path / "ab").exists()
