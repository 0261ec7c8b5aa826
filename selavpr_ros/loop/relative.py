"""The relative pose of a loop: the current camera in the matched keyframe's camera frame.

The geometry core of the localizer (:func:`selavpr_ros.geometry.estimate_query_pose`) is run
with the matched keyframe as the origin: the keyframe and its neighbours in the run (up to
``neighbours`` either side, those with an orientation) are the places, each posed relative to
the matched keyframe by the odometry of that time, which is locally accurate even when the run
has drifted since. With depth stored for the keyframes, PnP on their 3-D points gives the
pose. Without, and only when asked (``two_view``), features tracked between the keyframe and
its neighbours are triangulated (the odometry baseline gives the scale) and the camera placed
by PnP on them: coarse with grid features, and its covariance treats the triangulated points
as exact, so it is off by default. An estimate that falls back to a keyframe pose is no
relative pose: the caller publishes none.

Poses are camera body poses (REP 103). The neighbours' relative poses are their odometry
poses', i.e. exact when the odometry's child frame is the camera (or the camera sits at its
origin); PnP with the matched keyframe's depth alone does not depend on this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from selavpr_ros.extractors.base import Features
from selavpr_ros.geometry import (
    ImageFeatures,
    PoseConfig,
    PoseEstimate,
    estimate_query_pose,
    mnn_pairs,
    observe_place,
)
from selavpr_ros.geometry.pose import PlaceObservation, refused
from selavpr_ros.geometry.transforms import invert, matrix_to_pose, pose_matrix

if TYPE_CHECKING:
    from selavpr_ros.geometry.camera import CameraModel
    from selavpr_ros.loop.database import RunDatabase


def relative_pose(query: Features, image_hw: tuple[int, int], camera: CameraModel,
                  db: RunDatabase, then: int, neighbours: int = 2, neighbour_path_m: float = 5.0,
                  config: PoseConfig | None = None,
                  refiner: Callable[[], Callable[[np.ndarray, np.ndarray], np.ndarray] | None]
                  | None = None, two_view: bool = False) -> PoseEstimate:
    """Pose of the query camera in keyframe ``then``'s camera frame (``source`` none: refused).

    ``query`` is one image's features; ``image_hw`` its size, which must be the camera's.
    ``refiner`` makes sub-grid query pixels (:class:`selavpr_ros.geometry.refine.
    ClassicalRefiner`): it costs most of the time, but on the synthetic drive PnP on grid
    pixels has a 3x longer error tail (bench/PERFORMANCE.md, issue 16). With depth, PnP uses
    the ``pnp_places`` nearest keyframes; the others are matched only for two-view.
    ``two_view``: without depth, estimate from the neighbours (coarse, and its covariance is a
    lower bound: bench/PERFORMANCE.md, issue 16); False refuses instead.
    ``neighbour_path_m``: neighbours by id farther than this along the trajectory are not used:
    after a stretch without images (the synthetic drive's return loop) the next keyframe sees
    another place, and its matches skew PnP.
    """
    config = config or PoseConfig()
    if tuple(image_hw) != (camera.height, camera.width):
        return refused(f"camera info is {camera.width}x{camera.height} but the image is "
                       f"{image_hw[1]}x{image_hw[0]}", [then])
    origin = db.keyframes[then]
    if origin.orientation is None:
        return refused(f"keyframe {then} has no orientation", [then])
    to_origin = invert(pose_matrix(origin.position, origin.orientation))
    order = [then] + [then + s * d for d in range(1, neighbours + 1) for s in (-1, 1)]
    ids = [i for i in order if 0 <= i < len(db) and db.keyframes[i].orientation is not None
           and abs(db.keyframes[i].path_m - origin.path_m) <= neighbour_path_m]
    info = db.info
    local, mask = db.local(np.asarray(ids, np.int64))
    points = db.points(np.asarray(ids, np.int64))
    q = ImageFeatures.from_features(query, 0, image_hw)
    hw = (camera.height, camera.width)
    has_depth = points is not None and bool(np.isfinite(points[0]).any())
    if not has_depth and not two_view:
        return refused(f"keyframe {then} has no depth (two-view relative poses are off)", ids)

    def observe(row: int, refine: Callable[[np.ndarray, np.ndarray], np.ndarray] | None
                ) -> PlaceObservation:
        i = ids[row]
        kf = db.keyframes[i]
        assert kf.orientation is not None
        position, orientation = matrix_to_pose(to_origin @ pose_matrix(kf.position,
                                                                       kf.orientation))
        kf_points = None
        if points is not None and np.isfinite(points[row]).any():
            kf_points = points[row]
        place = ImageFeatures(local[row], mask[row],
                              db.keypoints(i) if info.has_keypoints else None, hw, kf_points)
        pairs = mnn_pairs(q.local, place.local, query_mask=q.mask, place_mask=place.mask,
                          rerank=info.rerank)
        return observe_place(info, q, place, pairs, i, position, orientation, camera, refine)

    refine = refiner() if refiner is not None else None
    if has_depth:
        first = [observe(row, refine) for row in range(min(config.pnp_places, len(ids)))]
        estimate = estimate_query_pose(first, camera, config)
        if estimate.source == "pnp" or not two_view:
            return estimate if estimate.ok else refused(estimate.reason, ids)
    estimate = estimate_query_pose([observe(row, refine) for row in range(len(ids))], camera,
                                   config)
    if not estimate.ok:
        return refused(estimate.reason, ids)
    return dataclasses.replace(estimate, places=tuple(ids))
