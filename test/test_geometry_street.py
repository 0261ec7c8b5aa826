"""End to end on the synthetic street: the query camera's pose against the truth.

Classical features of a mapped drive (with depth) and a query drive 3 m to the side in
afternoon light.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from selavpr_ros.geometry import PoseConfig
from selavpr_ros.synthetic import Camera, RouteConfig
from selavpr_ros.synthetic.pose_scene import (
    PoseScene,
    PoseSceneConfig,
    build_pose_scene,
    evaluate_query,
)

QUERIES = range(2, 12)


@pytest.fixture(scope="module")
def scene() -> PoseScene:
    config = PoseSceneConfig(route=RouteConfig(seed=11, frames=14, spacing_m=2.0,
                                               camera=Camera(width=320, height=240)))
    config = replace(config, extractor=replace(config.extractor, long_side=320))
    lateral = [t.lateral_m for t in config.route.traversals]
    assert lateral[1] - lateral[0] == 3.0  # the query drive is 3 m to the side
    return build_pose_scene(config)


def test_pnp_with_depth_beats_the_keyframe_pose(scene: PoseScene) -> None:
    pnp = [evaluate_query(scene, i, "pnp") for i in QUERIES]
    keyframe = [evaluate_query(scene, i, "keyframe") for i in QUERIES]
    assert all(r.estimate.source == "pnp" for r in pnp), [r.estimate.reason for r in pnp]
    t_pnp = np.median([r.translation_error_m for r in pnp])
    r_pnp = np.median([r.rotation_error_deg for r in pnp])
    t_key = np.median([r.translation_error_m for r in keyframe])
    # the keyframe is at least the 3 m lane offset away; PnP finds the query itself
    assert t_key >= 3.0
    assert t_pnp < 0.5 and r_pnp < 2.0, (t_pnp, r_pnp)
    for r in pnp:
        assert r.estimate.inliers >= 12 and r.estimate.reprojection_error_px < 6.0
        cov = r.estimate.covariance
        assert cov is not None and np.all(np.linalg.eigvalsh(cov) > 0)
    assert all(r.estimate.source == "keyframe" and r.estimate.places for r in keyframe)


def test_two_view_without_depth_beats_the_keyframe_pose(scene: PoseScene) -> None:
    results = [evaluate_query(scene, i, "two_view") for i in QUERIES]
    keyframe = [evaluate_query(scene, i, "keyframe") for i in QUERIES]
    sources = [r.estimate.source for r in results]
    assert set(sources) <= {"two_view", "keyframe"}
    assert sources.count("two_view") >= len(results) * 0.8
    for r in results:
        assert np.isfinite(r.translation_error_m) and np.isfinite(r.rotation_error_deg)
        if r.estimate.source == "two_view":
            assert len(r.estimate.places) >= 2 and r.estimate.inliers >= 12
        else:
            assert r.estimate.reason.startswith("two_view:")  # says why it fell back
    t_two = np.median([r.translation_error_m for r in results])
    r_two = np.median([r.rotation_error_deg for r in results])
    assert t_two < 2.0 and r_two < 5.0, (t_two, r_two)
    assert t_two < np.median([r.translation_error_m for r in keyframe])


def test_two_view_by_essential_matrices_refuses_or_labels(scene: PoseScene) -> None:
    """The essential-matrix method: a pose or a labelled fallback with its reason."""
    scene.config = replace(scene.config, pose=PoseConfig(two_view_method="essential"))
    try:
        results = [evaluate_query(scene, i, "two_view") for i in QUERIES[:5]]
    finally:
        scene.config = replace(scene.config, pose=PoseConfig())
    for r in results:
        assert r.estimate.source in ("two_view", "keyframe")
        assert r.estimate.source == "two_view" or r.estimate.reason.startswith("two_view:")
        assert np.isfinite(r.translation_error_m)


@pytest.mark.parametrize("mode", ["pnp", "two_view"])
def test_covariances_match_the_errors(scene: PoseScene, mode: str) -> None:
    # AMCL and an EKF weigh the pose by its covariance: the mean NEES against the truth must be
    # about the dimension (6), not the 4x (PnP) and 30x (two-view) of the uncalibrated models.
    # A loose band: 10 queries of one drive, heavy-tailed for two-view.
    from selavpr_ros.geometry.pose import normalized_error_squared
    from selavpr_ros.geometry.transforms import pose_matrix

    nees = []
    for i in QUERIES:
        result = evaluate_query(scene, i, mode)  # type: ignore[arg-type]
        if result.estimate.source != mode:
            continue
        truth = scene.query_frames[i]
        nees.append(normalized_error_squared(result.estimate,
                                             pose_matrix(truth.position, truth.orientation)))
    assert len(nees) >= 8
    assert 1.5 < float(np.mean(nees)) < 18.0, nees
    assert 1.0 < float(np.median(nees)) < 15.0, nees


def test_nees_is_the_dimension_for_errors_drawn_from_the_covariance() -> None:
    import cv2

    from selavpr_ros.geometry.pose import PoseEstimate, normalized_error_squared
    from selavpr_ros.geometry.transforms import matrix_to_pose, pose_matrix

    rng = np.random.default_rng(3)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T * 1e-3 + np.eye(6) * 1e-4
    truth = pose_matrix((1.0, 2.0, 0.5), (0.0, 0.0, 0.38268343, 0.92387953))
    values = []
    for e in rng.multivariate_normal(np.zeros(6), cov, size=4000):
        moved = np.eye(4)
        moved[:3, :3] = cv2.Rodrigues(e[3:])[0] @ truth[:3, :3]  # map-frame rotation error
        moved[:3, 3] = truth[:3, 3] + e[:3]
        position, orientation = matrix_to_pose(moved)
        values.append(normalized_error_squared(
            PoseEstimate("pnp", position, orientation, cov), truth))
    assert np.mean(values) == pytest.approx(6.0, abs=0.25)
