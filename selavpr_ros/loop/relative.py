"""The relative pose of a loop: the current camera in the matched keyframe's camera frame.

The geometry core of the localizer (:func:`selavpr_ros.geometry.estimate_query_pose`) is run
with the matched keyframe as the origin: the keyframe and its neighbours in the run (up to
``neighbours`` either side, those with an orientation) are the places, each posed relative to
the matched keyframe by the odometry of that time, which is locally accurate even when the run
has drifted since. With depth stored for the keyframes, PnP on their 3-D points gives the
pose; without, features tracked between the keyframe and its neighbours are triangulated
(the odometry baseline gives the scale) and the camera placed by PnP on them. An estimate that
falls back to a keyframe pose is no relative pose: the caller publishes none.

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
    observe_place,
)
from selavpr_ros.geometry.pose import refused
from selavpr_ros.geometry.transforms import invert, matrix_to_pose, pose_matrix

if TYPE_CHECKING:
    from selavpr_ros.geometry.camera import CameraModel
    from selavpr_ros.loop.database import RunDatabase


def relative_pose(query: Features, image_hw: tuple[int, int], camera: CameraModel,
                  db: RunDatabase, then: int, neighbours: int = 2,
                  config: PoseConfig | None = None,
                  refine: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                  ) -> PoseEstimate:
    """Pose of the query camera in keyframe ``then``'s camera frame (``source`` none: refused).

    ``query`` is one image's features; ``image_hw`` its size, which must be the camera's.
    ``refine``: sub-grid query pixels (:class:`selavpr_ros.geometry.refine.ClassicalRefiner`).
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
    ids = [i for i in order if 0 <= i < len(db) and db.keyframes[i].orientation is not None]
    info = db.info
    local, mask = db.local(np.asarray(ids, np.int64))
    points = db.points(np.asarray(ids, np.int64))
    q = ImageFeatures.from_features(query, 0, image_hw)
    hw = (camera.height, camera.width)
    observations = []
    for row, i in enumerate(ids):
        kf = db.keyframes[i]
        assert kf.orientation is not None
        position, orientation = matrix_to_pose(to_origin @ pose_matrix(kf.position,
                                                                       kf.orientation))
        kf_points = None
        if points is not None and np.isfinite(points[row]).any():
            kf_points = points[row]
        place = ImageFeatures(local[row], mask[row],
                              db.keypoints(i) if info.has_keypoints else None, hw, kf_points)
        observations.append(observe_place(info, q, place, i, position, orientation, camera,
                                          refine, rerank=info.rerank))
    estimate = estimate_query_pose(observations, camera, config)
    if not estimate.ok:
        return refused(estimate.reason, ids)
    return dataclasses.replace(estimate, places=tuple(ids))
