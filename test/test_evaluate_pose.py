"""``selavpr evaluate`` reports the query poses' errors against ground truth, with a CDF plot.

Map: the synthetic street's first drive with depth and camera info (folder, 16-bit PNG depth,
calibration YAML); queries: the drive 3 m to the side in afternoon light.
"""

from __future__ import annotations

import json
from pathlib import Path

from selavpr_ros.cli import main as cli
from selavpr_ros.synthetic import Camera, RouteConfig
from selavpr_ros.synthetic.depth import camera_info, render_traversal_depth
from selavpr_ros.synthetic.route import render_traversal, route_world
from selavpr_ros.synthetic.writers import (
    write_camera_yaml,
    write_depth_folder,
    write_image_folder,
)

ROUTE = RouteConfig(seed=11, frames=12, spacing_m=2.0, camera=Camera(width=320, height=240))


def test_pose_errors_per_source_with_the_keyframe_baseline(tmp_path: Path) -> None:
    world = route_world(ROUTE)
    mapped = list(render_traversal(ROUTE, 0, world))
    write_image_folder(mapped, tmp_path / "map")
    write_depth_folder(mapped, render_traversal_depth(ROUTE, 0, world), tmp_path / "depth")
    write_image_folder(list(render_traversal(ROUTE, 1, world))[3:9], tmp_path / "query")
    write_camera_yaml(camera_info(ROUTE.camera), tmp_path / "camera.yaml")
    assert cli(["build-map", str(tmp_path / "m"), "--images", str(tmp_path / "map"),
                "--poses", str(tmp_path / "map" / "poses.csv"), "--extractor", "classical",
                "--min-distance", "0", "--no-progress",
                "--camera-info", str(tmp_path / "camera.yaml"),
                "--depth-folder", str(tmp_path / "depth")]) == 0
    assert cli(["evaluate", str(tmp_path / "m"), "--images", str(tmp_path / "query"),
                "--poses", str(tmp_path / "query" / "poses.csv"), "--min-margin", "0",
                "--top-k", "10", "--camera-info-file", str(tmp_path / "camera.yaml"),
                "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    pose = report["pose"]
    assert pose["all"]["frames"] == 6
    pnp = pose["by_source"]["pnp"]
    assert pnp["frames"] >= 5
    baseline = pose["keyframe_baseline"]
    # the matched places are on the other lane, >= 3 m away; PnP finds the query itself
    assert baseline["translation_m"]["median"] >= 2.5
    assert pnp["translation_m"]["median"] < 0.5 and pnp["rotation_deg"]["median"] < 2.0
    assert len(pose["errors"]) == 6
    assert (tmp_path / "out" / "pose_errors.png").stat().st_size > 10_000
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Query pose" in summary and "keyframe baseline" in summary
