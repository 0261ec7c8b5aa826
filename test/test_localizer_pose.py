"""The localizer's query pose on a real map of the synthetic street (PnP, two-view, keyframe).

The map is built from a drive with depth and camera model; queries come from a drive 3 m to
the side in other light; errors are against the rendered ground truth.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.geometry import CameraModel
from selavpr_ros.io.poses import rotation_angle
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.map.local_format import LocalFormat
from selavpr_ros.synthetic import Camera, RouteConfig
from selavpr_ros.synthetic.pose_scene import PoseScene, PoseSceneConfig, build_pose_scene

QUERIES = range(3, 10)
CONFIG = LocalizerConfig(top_k=10, min_margin=0.0)


@pytest.fixture(scope="module")
def scene() -> PoseScene:
    config = PoseSceneConfig(route=RouteConfig(seed=11, frames=14, spacing_m=2.0,
                                               camera=Camera(width=320, height=240)))
    return build_pose_scene(replace(config, extractor=replace(config.extractor, long_side=320)))


def make_map(scene: PoseScene, path: Path, camera: bool, points: bool,
             local_format: str = "fp16") -> PlaceMap:
    assert scene.fitted is not None
    pm = PlaceMap.create(path, scene.fitted, camera=scene.camera if camera else None,
                         local_format=LocalFormat.parse(local_format))
    places = [PlaceInfo(stamp_ns=f.stamp_ns, frame_id="camera", position=f.position,
                        orientation=f.orientation) for f in scene.map_frames]
    pm.append(scene.map_features, places, points=scene.map_points if points else None)
    pm.close()
    return PlaceMap.open(path)


def errors(scene: PoseScene, localizer: Localizer, camera: CameraModel | None,
           ) -> tuple[list[str], np.ndarray, np.ndarray]:
    sources, t_err, r_err = [], [], []
    for i in QUERIES:
        truth = scene.query_frames[i]
        result = localizer.query(truth.image, camera=camera)
        assert result.accepted and result.pose is not None
        sources.append(result.pose.source)
        assert result.pose.position is not None
        t_err.append(np.linalg.norm(np.subtract(result.pose.position, truth.position)))
        if result.pose.orientation is not None:
            r_err.append(np.degrees(rotation_angle(result.pose.orientation, truth.orientation)))
        assert "pose" in result.timings_ms
    return sources, np.array(t_err), np.array(r_err)


def test_pnp_from_a_map_with_depth(scene: PoseScene, tmp_path: Path) -> None:
    with make_map(scene, tmp_path / "m", camera=True, points=True) as pm:
        sources, t_err, r_err = errors(scene, Localizer(pm, scene.fitted, CONFIG), scene.camera)
    assert sources.count("pnp") == len(QUERIES), sources
    assert np.median(t_err) < 0.5 and np.median(r_err) < 2.0, (t_err, r_err)


@pytest.mark.parametrize("local_format", ["int8", "pca32-int8"])
def test_pnp_from_a_compact_map(scene: PoseScene, tmp_path: Path, local_format: str) -> None:
    # places decoded, the query projected like re-ranking's: pairs and PnP as with fp16
    with make_map(scene, tmp_path / "m", True, True, local_format) as pm:
        assert pm.local_format.name == local_format
        sources, t_err, r_err = errors(scene, Localizer(pm, scene.fitted, CONFIG), scene.camera)
    assert sources.count("pnp") >= len(QUERIES) - 1, sources
    assert np.median(t_err) < 0.5 and np.median(r_err) < 2.0, (t_err, r_err)


def test_two_view_without_depth(scene: PoseScene, tmp_path: Path) -> None:
    with make_map(scene, tmp_path / "m", camera=True, points=False) as pm:
        sources, t_err, _ = errors(scene, Localizer(pm, scene.fitted, CONFIG), scene.camera)
    assert set(sources) <= {"two_view", "keyframe"} and sources.count("two_view") >= 5, sources
    # the keyframe poses are >= 3 m off (the lane offset); two-view places the query itself
    assert np.median(t_err) < 2.0, t_err


def test_old_map_and_missing_camera_fall_back_to_labelled_keyframe(
        scene: PoseScene, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), make_map(scene, tmp_path / "m", False, False) as pm:
        localizer = Localizer(pm, scene.fitted, CONFIG)
        sources, t_err, _ = errors(scene, localizer, scene.camera)
        assert set(sources) == {"keyframe"}
        assert localizer.query(scene.query_frames[4].image, scene.camera).pose.reason == \
            "the map has no camera model"
    said = [r for r in caplog.records if "has no camera model" in r.getMessage()]
    assert len(said) == 1  # said once, not per frame
    assert np.all(t_err >= 2.5)  # the keyframe is the other lane's pose
    with make_map(scene, tmp_path / "m2", camera=True, points=True) as pm:
        localizer = Localizer(pm, scene.fitted, CONFIG)
        result = localizer.query(scene.query_frames[4].image)  # no camera for the query
        assert result.pose.source == "keyframe"
        assert result.pose.reason == "no camera model for the query"
        wrong = CameraModel.pinhole(640, 480, 300.0)  # camera info of another size
        result = localizer.query(scene.query_frames[4].image, camera=wrong)
        assert result.pose.source == "keyframe" and "image is 320x240" in result.pose.reason


def test_camera_info_file(scene: PoseScene, tmp_path: Path) -> None:
    k = scene.camera.k
    (tmp_path / "cam.yaml").write_text(
        "image_width: 320\nimage_height: 240\ncamera_name: front\n"
        f"camera_matrix: {{rows: 3, cols: 3, data: {[float(v) for v in k.reshape(-1)]}}}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [0, 0, 0, 0, 0]}\n")
    with make_map(scene, tmp_path / "m", camera=True, points=True) as pm:
        localizer = Localizer(pm, scene.fitted, replace(
            CONFIG, camera_info_file=str(tmp_path / "cam.yaml")))
        assert localizer.query(scene.query_frames[5].image).pose.source == "pnp"
