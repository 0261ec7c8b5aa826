"""Pose estimators: known poses from exact synthetic correspondences, degenerate geometry.

Degenerate cases are refused with a reason; covariances and the fallback order are checked.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from selavpr_ros.geometry import (
    CameraModel,
    PlaceObservation,
    PlaceView,
    PoseConfig,
    estimate_pnp,
    estimate_query_pose,
    estimate_triangulated,
    estimate_two_view,
    keyframe_estimate,
    points_in_map,
)
from selavpr_ros.geometry.pose import UNKNOWN_VARIANCE
from selavpr_ros.geometry.transforms import (
    OPTICAL_IN_BODY,
    camera_to_base,
    invert,
    matrix_to_pose,
    mean_rotation,
    pose_matrix,
    quaternion_to_matrix,
    rotation_angle_deg,
)

CAMERA = CameraModel.pinhole(640, 480, 400.0)


def ypr(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Body rotation from yaw (about z), pitch (about y), roll (about x), in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    return rz @ ry @ rx


def body_pose(position: tuple[float, float, float], rotation: np.ndarray) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = position
    return pose


def project(points_map: np.ndarray, pose: np.ndarray, camera: CameraModel = CAMERA
            ) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels of map points seen by a camera whose body pose is ``pose``; visibility."""
    rot = pose[:3, :3] @ OPTICAL_IN_BODY
    cam = (points_map - pose[:3, 3]) @ rot  # optical frame
    px = camera.project(cam)
    visible = (cam[:, 2] > 0.5) & (px[:, 0] >= 0) & (px[:, 0] < camera.width) \
        & (px[:, 1] >= 0) & (px[:, 1] < camera.height)
    return px, visible


def scene(rng: np.random.Generator, n: int = 400) -> np.ndarray:
    """Points 8-30 m ahead (+x) of the origin, spread left-right and up-down."""
    return np.column_stack([rng.uniform(8, 30, n), rng.uniform(-12, 12, n), rng.uniform(-3, 8, n)])


def test_pnp_recovers_a_known_pose_from_exact_correspondences() -> None:
    rng = np.random.default_rng(0)
    points = scene(rng)
    truth = body_pose((1.0, -0.7, 1.6), ypr(7.0, 3.0, -2.0))
    distorted = CameraModel(640, 480, CAMERA.k, "plumb_bob", [-0.2, 0.05, 0.001, -0.001, 0.0])
    px, vis = project(points, truth, distorted)
    assert vis.sum() > 100
    est = estimate_pnp(px[vis], points[vis], distorted, places=(5,))
    assert est.source == "pnp" and est.ok and est.places == (5,)
    assert np.allclose(est.position, truth[:3, 3], atol=1e-6)
    assert rotation_angle_deg(est.matrix()[:3, :3], truth[:3, :3]) < 1e-5
    assert est.inliers == int(vis.sum()) and est.reprojection_error_px < 1e-4
    # exact data: the covariance sits on its floor, positive definite and small
    assert est.covariance is not None and np.all(np.linalg.eigvalsh(est.covariance) > 0)
    assert np.sqrt(np.diag(est.covariance)[:3]).max() < 0.1


def test_pnp_rejects_outliers_and_its_covariance_follows_the_noise() -> None:
    rng = np.random.default_rng(1)
    points = scene(rng, 300)
    truth = body_pose((0.0, 2.0, 1.5), ypr(-10.0))
    px, vis = project(points, truth)
    px, points = px[vis], points[vis]
    noisy = px + rng.normal(0, 1.0, px.shape)
    wrong = rng.random(len(px)) < 0.3  # 30 % wrong matches
    noisy[wrong] = rng.uniform([0, 0], [640, 480], (int(wrong.sum()), 2))
    est = estimate_pnp(noisy, points, CAMERA)
    assert est.ok
    assert np.linalg.norm(np.subtract(est.position, truth[:3, 3])) < 0.1
    assert rotation_angle_deg(est.matrix()[:3, :3], truth[:3, :3]) < 0.3
    assert est.inliers <= int((~wrong).sum()) + 5
    assert 0.7 < est.reprojection_error_px < 2.0  # 1 px noise per axis: RMS ~1.4 px
    exact = estimate_pnp(px, points, CAMERA)
    assert exact.covariance is not None and est.covariance is not None
    assert np.trace(est.covariance[:3, :3]) > np.trace(exact.covariance[:3, :3])


def test_pnp_refuses_too_few_points_with_depth() -> None:
    rng = np.random.default_rng(2)
    points = scene(rng, 30)
    truth = body_pose((0.0, 0.0, 1.5), ypr(0.0))
    px, _ = project(points, truth)
    points[5:] = np.nan  # no depth for most features
    est = estimate_pnp(px, points, CAMERA, places=(3,))
    assert est.source == "none" and not est.ok and est.position is None
    assert "5 correspondences with depth" in est.reason and est.places == (3,)


def test_points_in_map_inverts_projection() -> None:
    place = body_pose((3.0, 1.0, 1.6), ypr(20.0))
    optical = np.array([[0.5, -0.2, 10.0], [-1.0, 0.3, 4.0]])
    world = points_in_map(optical, place)
    px, _ = project(world, place)
    assert np.allclose(px, CAMERA.project(optical), atol=1e-9)


def views_for(places: list[np.ndarray], query: np.ndarray, points: np.ndarray) -> list[PlaceView]:
    qpx, qvis = project(points, query)
    views = []
    for i, pose in enumerate(places):
        ppx, pvis = project(points, pose)
        both = qvis & pvis
        views.append(PlaceView(i, pose, CAMERA, ppx[both], qpx[both]))
    return views


@pytest.mark.parametrize("count", [2, 3])
def test_two_view_recovers_centre_and_rotation(count: int) -> None:
    rng = np.random.default_rng(3)
    points = scene(rng, 500)
    places = [body_pose((-2.0, -2.0, 1.6), ypr(3.0)), body_pose((2.0, -2.0, 1.6), ypr(-4.0)),
              body_pose((0.0, -3.0, 1.6), ypr(0.0, 2.0))][:count]
    query = body_pose((0.5, 1.0, 1.7), ypr(8.0, -1.0, 1.0))
    est = estimate_two_view(views_for(places, query, points), CAMERA)
    assert est.source == "two_view", est.reason
    assert est.places == tuple(range(count)) and est.reason == ""
    assert np.allclose(est.position, query[:3, 3], atol=1e-4)
    assert rotation_angle_deg(est.matrix()[:3, :3], query[:3, :3]) < 1e-3
    assert est.reprojection_error_px < 1e-2 and est.inliers > 100 * count
    assert est.covariance is not None and np.all(np.linalg.eigvalsh(est.covariance) > 0)


def test_two_view_refuses_parallel_rays() -> None:
    # driving straight ahead: both places and the query on one line, the rays coincide
    rng = np.random.default_rng(4)
    points = scene(rng, 500) + np.array([20.0, 0.0, 0.0])
    places = [body_pose((0.0, 0.0, 1.6), ypr(0.0)), body_pose((3.0, 0.0, 1.6), ypr(0.0))]
    query = body_pose((7.0, 0.0, 1.6), ypr(2.0))
    est = estimate_two_view(views_for(places, query, points), CAMERA)
    assert est.source == "none" and "near-parallel" in est.reason


def test_two_view_refuses_no_baseline_and_too_few_matches() -> None:
    rng = np.random.default_rng(5)
    points = scene(rng, 400)
    query = body_pose((0.0, 0.0, 1.6), ypr(5.0))
    same_spot = body_pose((0.0, 0.0, 1.6), ypr(-3.0))  # pure rotation: no translation
    other = body_pose((1.0, -3.0, 1.6), ypr(0.0))
    views = views_for([same_spot, other], query, points)
    est = estimate_two_view(views, CAMERA)
    assert est.source == "none"
    assert "place 0: baseline too small" in est.reason and "1 usable places" in est.reason
    few = [PlaceView(v.place_id, v.pose, v.camera, v.place_pixels[:10], v.query_pixels[:10])
           for v in views]
    est = estimate_two_view(few, CAMERA)
    assert est.source == "none" and "10 matches, need 20" in est.reason
    assert estimate_two_view(views[:1], CAMERA).reason == "two_view: needs two places, got 1"


def test_fallback_order_pnp_then_two_view_then_keyframe() -> None:
    rng = np.random.default_rng(6)
    points = scene(rng, 400)
    places = [body_pose((-2.0, -2.0, 1.6), ypr(3.0)), body_pose((2.0, -2.0, 1.6), ypr(-4.0))]
    query = body_pose((0.5, 1.0, 1.6), ypr(6.0))
    views = views_for(places, query, points)

    def observation(i: int, with_depth: bool, orientation: bool = True) -> PlaceObservation:
        v = views[i]
        pos, quat = matrix_to_pose(v.pose)
        pts = None
        _, vis = project(points, query)
        _, pvis = project(points, v.pose)
        if with_depth:  # the place's own optical-frame points of its matched pixels
            rot = v.pose[:3, :3] @ OPTICAL_IN_BODY
            pts = (points[vis & pvis] - v.pose[:3, 3]) @ rot
        return PlaceObservation(i, pos, quat if orientation else None, CAMERA,
                                v.query_pixels, v.place_pixels, pts,
                                np.nonzero(vis & pvis)[0])

    est = estimate_query_pose([observation(0, True), observation(1, False)], CAMERA)
    assert est.source == "pnp" and np.allclose(est.position, query[:3, 3], atol=1e-6)
    for method in ("triangulate", "essential"):
        est = estimate_query_pose([observation(0, False), observation(1, False)], CAMERA,
                                  PoseConfig(two_view_method=method))  # type: ignore[arg-type]
        assert est.source == "two_view" and np.allclose(est.position, query[:3, 3], atol=1e-4)
        assert rotation_angle_deg(est.matrix()[:3, :3], query[:3, :3]) < 1e-3
    est = estimate_query_pose([observation(0, False)], CAMERA)
    assert est.source == "keyframe" and est.position == pytest.approx(tuple(places[0][:3, 3]))
    assert "fewer than two places" in est.reason
    est = estimate_query_pose([observation(0, True, orientation=False)], CAMERA)
    assert est.source == "keyframe" and est.orientation is None
    assert est.covariance is not None and est.covariance[5, 5] == UNKNOWN_VARIANCE
    assert "has no orientation" in est.reason
    assert estimate_query_pose([], CAMERA).source == "none"


def test_keyframe_estimate_covariance_from_config() -> None:
    config = PoseConfig(keyframe_sigma_m=3.0, keyframe_sigma_deg=5.0)
    est = keyframe_estimate(4, (1.0, 2.0, 0.0), (0.0, 0.0, 0.0, 1.0), config, "why")
    assert est.source == "keyframe" and est.places == (4,) and est.reason == "why"
    assert est.covariance is not None
    assert np.allclose(np.diag(est.covariance), [9, 9, 9] + [math.radians(5.0) ** 2] * 3)


def test_transform_helpers() -> None:
    q = (0.1, -0.2, 0.3, 0.9)
    rot = quaternion_to_matrix(q)
    assert np.allclose(rot @ rot.T, np.eye(3)) and np.isclose(np.linalg.det(rot), 1.0)
    pose = pose_matrix((1.0, 2.0, 3.0), q)
    back_pos, back_q = matrix_to_pose(pose)
    assert np.allclose(back_pos, (1, 2, 3))
    assert np.allclose(np.abs(np.dot(back_q, np.array(q) / np.linalg.norm(q))), 1.0)
    assert np.allclose(invert(pose) @ pose, np.eye(4))
    # base <- camera: camera 0.5 m ahead of and 1 m above the base, same orientation
    camera_in_base = body_pose((0.5, 0.0, 1.0), np.eye(3))
    camera_in_map = body_pose((10.0, 5.0, 1.0), ypr(90.0))
    base = camera_to_base(camera_in_map, camera_in_base)
    assert np.allclose(base[:3, 3], (10.0, 4.5, 0.0)) and np.allclose(base[:3, :3], ypr(90.0))
    # chordal mean of rotations symmetric about yaw 10 deg is yaw 10 deg
    mean = mean_rotation([ypr(7.0), ypr(13.0), ypr(10.0, 2.0), ypr(10.0, -2.0)])
    assert rotation_angle_deg(mean, ypr(10.0)) < 1e-9
    with pytest.raises(ValueError):
        mean_rotation([])
    assert PoseConfig().optical_in_body.shape == (3, 3)


def test_triangulation_between_places_recovers_the_query_and_rejects_wrong_tracks() -> None:
    rng = np.random.default_rng(8)
    points = scene(rng, 400)
    places = [body_pose((0.0, -2.0, 1.6), ypr(2.0)), body_pose((2.0, -2.0, 1.6), ypr(-3.0)),
              body_pose((4.0, -2.0, 1.6), ypr(0.0))]
    query = body_pose((1.5, 1.0, 1.6), ypr(5.0, 1.0))
    qpx, qvis = project(points, query)
    observations = []
    for i, pose in enumerate(places):
        ppx, pvis = project(points, pose)
        both = np.nonzero(qvis & pvis)[0]
        place_px = ppx[both].copy()
        if i == 1:  # a third of place 1's matches are wrong (another point's pixel)
            wrong = rng.random(len(both)) < 0.33
            place_px[wrong] = ppx[rng.permutation(both)[: int(wrong.sum())]]
        pos, quat = matrix_to_pose(pose)
        observations.append(PlaceObservation(i, pos, quat, CAMERA, qpx[both], place_px, None,
                                             both))
    est = estimate_triangulated(observations, CAMERA)
    assert est.source == "two_view" and est.places == (0, 1, 2)
    assert np.allclose(est.position, query[:3, 3], atol=1e-4)
    assert rotation_angle_deg(est.matrix()[:3, :3], query[:3, :3]) < 1e-3
    # tracks need query indices and two posed places
    bare = [PlaceObservation(o.place_id, o.position, o.orientation, o.camera, o.query_pixels,
                             o.place_pixels) for o in observations]
    assert "needs two places" in estimate_triangulated(bare, CAMERA).reason
    # places on one spot see no parallax: no track survives the triangulation angle
    same = [PlaceObservation(i, observations[0].position, observations[0].orientation, CAMERA,
                             observations[0].query_pixels, observations[0].place_pixels, None,
                             observations[0].query_indices) for i in range(2)]
    assert "0 tracks triangulated" in estimate_triangulated(same, CAMERA).reason
