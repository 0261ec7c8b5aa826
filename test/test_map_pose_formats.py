"""The pose layers under main's compact formats: strided grids, merged maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extractor_testlib import FeatureOnlyExtractor
from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.geometry.correspondences import mnn_pairs
from selavpr_ros.geometry.observations import ImageFeatures, observe_place
from selavpr_ros.geometry.pixels import grid_pixels
from selavpr_ros.io.poses import rotation_angle
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.map import PlaceInfo, PlaceMap
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


# a SelaVPR-like 21x21 grid; the test passes precomputed features to the localizer
GRID21 = ExtractorInfo("fake-grid21", "w", global_dim=16, local_count=441, local_dim=C,
                       local_grid=(21, 21))


@pytest.mark.parametrize("local_format", ["fp16", "int8"])
def test_localizer_pnp_on_a_strided_map(tmp_path: Path, local_format: str) -> None:
    """Query pixels and map points of the re-ranking's pairs follow --local-stride's cells.

    The query is a mapped place's own features seen from its own pose, so PnP on the
    re-ranking's pairs must give that pose with (nearly) every kept cell an inlier; a query
    cell mapped to another pixel, or a point of another cell, leaves no consistent pose.
    (The place-side pixels, used by two-view, are covered by the test above.)
    """
    camera = CameraModel.pinhole(160, 120, 100.0)
    rng = np.random.default_rng(5)
    n = 3
    local = rng.standard_normal((n, 441, C)).astype(np.float32)
    local /= np.linalg.norm(local, axis=-1, keepdims=True)
    global_desc = rng.standard_normal((n, 16)).astype(np.float32)
    global_desc /= np.linalg.norm(global_desc, axis=-1, keepdims=True)
    feats = Features(global_desc, local)
    pixels = grid_pixels((21, 21), (120, 160))
    depth = 4.0 + 2.0 * np.sin(np.arange(441) * 0.7)  # not a plane
    rays = np.c_[camera.normalized(pixels), np.ones(441)]
    points = np.repeat((rays * depth[:, None])[None], n, axis=0).astype(np.float32)
    places = [PlaceInfo(stamp_ns=10**9 * (i + 1), position=(float(i), 0.5, 0.0),
                        orientation=(0.0, 0.0, np.sin(0.1 * i), np.cos(0.1 * i)))
              for i in range(n)]
    pm = PlaceMap.create(tmp_path / "m", GRID21, camera=camera,
                         local_format=LocalFormat.parse(local_format, 2))
    pm.append(feats, places, points=points)
    pm.close()
    with PlaceMap.open(tmp_path / "m") as pm:
        assert pm.local_format.stride == 2 and pm.points([1]).shape == (1, 121, 3)
        localizer = Localizer(pm, FeatureOnlyExtractor(GRID21),
                              LocalizerConfig(top_k=3, min_margin=0.0))
        query = Features(feats.global_desc[1:2], feats.local[1:2])
        result = localizer.query_features(query, camera=camera)
    pose = result.pose
    assert result.accepted and pose is not None and pose.source == "pnp", pose
    assert pose.position is not None and pose.orientation is not None
    assert np.allclose(pose.position, places[1].position, atol=0.02), pose.position
    assert np.degrees(rotation_angle(pose.orientation, places[1].orientation)) < 0.5
    assert pose.inliers >= 115 and pose.reprojection_error_px < 0.5, pose  # 121 kept cells


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
