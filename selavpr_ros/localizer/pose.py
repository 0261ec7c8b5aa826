"""The query camera's pose for an accepted frame, from the map's camera model and points.

Runs once per accepted frame on the best ``pose_places`` re-ranked places only: their MNN pairs
with the query, kept by the re-ranking itself (:func:`selavpr_ros.matching.mnn_matches`, not
recomputed), become :class:`PlaceObservation` s and
:func:`selavpr_ros.geometry.estimate_query_pose` tries PnP (places with depth), two-view (two or
more places with poses) and finally the keyframe pose, saying why in the estimate's ``reason``.
Without a query camera model, or with a map built without one, the estimate is the keyframe
pose, labelled so.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from selavpr_ros.extractors.base import Extractor, Features
from selavpr_ros.extractors.classical import ClassicalExtractor
from selavpr_ros.geometry import (
    CameraModel,
    ImageFeatures,
    PoseConfig,
    PoseEstimate,
    estimate_query_pose,
    keyframe_estimate,
    observe_place,
)
from selavpr_ros.geometry.pose import refused
from selavpr_ros.geometry.refine import ClassicalRefiner
from selavpr_ros.geometry.transforms import camera_to_base, matrix_to_pose
from selavpr_ros.map import PlaceMap
from selavpr_ros.matching import MatchPairs

log = logging.getLogger(__name__)


class QueryPose:
    """Estimates query poses against one map; says once when the map lacks what PnP needs."""

    def __init__(self, place_map: PlaceMap, extractor: Extractor,
                 config: PoseConfig | None = None) -> None:
        self.place_map = place_map
        self.extractor = extractor
        self.config = config or PoseConfig()
        self.map_camera = place_map.camera
        self.has_points = place_map.has_points
        if self.map_camera is None:
            log.info("map %s has no camera model (an older map or built without camera info): "
                     "query poses are the matched keyframes' poses", place_map.path)
        elif not self.has_points:
            log.info("map %s has no depth points: query poses by two-view geometry or the "
                     "keyframe pose", place_map.path)

    def wants_pairs(self, camera: CameraModel | None, places: int) -> bool:
        """Whether an accepted frame could get more than the keyframe pose.

        The re-ranking then keeps its MNN pairs for :meth:`estimate`.
        """
        return places > 0 and camera is not None and self.map_camera is not None

    def estimate(self, candidates: Any, pairs: Sequence[MatchPairs], features: Features,
                 camera: CameraModel | None, places: int, image: np.ndarray | None = None,
                 refine: bool = True) -> PoseEstimate:
        """Pose of the query camera given the accepted candidate first in ``candidates``.

        ``pairs[i]``: the re-ranking's MNN pairs of ``candidates[i]`` (query and place features
        as the map stores them), for the first re-ranked candidates; places beyond them are not
        used (no re-ranking, no correspondences).
        """
        best = candidates[0]
        if best.position is None:
            return refused(f"place {best.place_id} has no pose", [best.place_id])

        def keyframe(reason: str) -> PoseEstimate:
            return keyframe_estimate(best.place_id, best.position, best.orientation,
                                     self.config, reason)

        if places <= 0:
            return keyframe("pose_places is 0")
        if camera is None:
            return keyframe("no camera model for the query")
        if self.map_camera is None:
            return keyframe("the map has no camera model")
        if not pairs:
            return keyframe("no re-ranking (rerank_k is 0): no correspondences")
        if image is not None and tuple(image.shape[:2]) != (camera.height, camera.width):
            return keyframe(f"camera info is {camera.width}x{camera.height} but the image is "
                            f"{image.shape[1]}x{image.shape[0]}")
        used = [(c, p) for c, p in zip(candidates[:places], pairs, strict=False)
                if c.position is not None]
        ids = np.asarray([c.place_id for c, _ in used], np.int64)
        points = self.place_map.points(ids) if self.has_points else None
        info = self.place_map.extractor_info
        # The pairs index the map's stored form: a subsampled grid (--local-stride) on both
        # sides (the query was put into the stored space to be re-ranked).
        codec = self.place_map.codec
        grid_index = codec.kept_indices()
        keypoints = features.keypoints
        query = ImageFeatures(
            features.local[0], None, None if keypoints is None else keypoints[0],
            (camera.height, camera.width), None, grid_index)
        raw_places = codec.format.dtype in ("float16", "float32") and not codec.format.pca_dim
        can_refine = (refine and image is not None and raw_places  # refines on raw descriptors
                      and isinstance(self.extractor, ClassicalExtractor))
        map_camera = self.map_camera
        map_hw = (map_camera.height, map_camera.width)
        place_keypoints = self.place_map.keypoints(ids)  # None for grid extractors
        place_local: np.ndarray | None = None  # the places' descriptors: read to refine only

        def observe(row: int, refiner: Any) -> Any:
            nonlocal place_local
            cand, cand_pairs = used[row]
            if refiner is not None and place_local is None:
                place_local = self.place_map.features(ids).local
            place_points = None
            if points is not None and np.isfinite(points[row]).any():
                place_points = points[row]
            place = ImageFeatures(
                place_local[row] if place_local is not None else np.zeros((0, 0), np.float32),
                None, None if place_keypoints is None else place_keypoints[row], map_hw,
                place_points, grid_index)
            return observe_place(info, query, place, cand_pairs, cand.place_id, cand.position,
                                 cand.orientation, map_camera, refiner)

        # With depth, PnP needs only the best pnp_places places and no sub-grid refinement
        # (grid pixels are as accurate against map points: bench/PERFORMANCE.md); the
        # refinement (a fine-grid RootSIFT of the query) is computed only when PnP fails.
        if points is not None:
            first = [observe(row, None) for row in range(min(self.config.pnp_places,
                                                             len(used)))]
            estimate = estimate_query_pose(first, camera, self.config)
            if estimate.source == "pnp" or (not can_refine and len(first) == len(used)):
                return estimate
        refiner = None
        if can_refine:  # computed here: the fine grid of the query costs most of the time
            assert isinstance(self.extractor, ClassicalExtractor) and image is not None
            refiner = ClassicalRefiner(self.extractor.config, image)
        observations = [observe(row, refiner) for row in range(len(used))]
        return estimate_query_pose(observations, camera, self.config)


def robot_pose(estimate: PoseEstimate, camera_in_base: np.ndarray) -> PoseEstimate:
    """Return the robot base's pose from the camera's, given base <- camera (TF, image stamp).

    The covariance follows to first order: a rotation error d_theta of the camera (map-frame
    rotation vector) moves the base by ``-[a]x d_theta`` with ``a`` the camera-to-base offset
    in the map frame. Without an orientation the base cannot be placed: refused.
    """
    if estimate.position is None or estimate.orientation is None:
        return refused(f"{estimate.source} estimate without orientation: the base pose needs "
                       "one", estimate.places)
    camera = estimate.matrix()
    base = camera_to_base(camera, camera_in_base)
    position, orientation = matrix_to_pose(base)
    covariance = estimate.covariance
    if covariance is not None:
        offset = base[:3, 3] - camera[:3, 3]
        jac = np.eye(6)
        jac[:3, 3:] = -np.array([[0.0, -offset[2], offset[1]],
                                 [offset[2], 0.0, -offset[0]],
                                 [-offset[1], offset[0], 0.0]])
        covariance = jac @ covariance @ jac.T
    return dataclasses.replace(estimate, position=position, orientation=orientation,
                               covariance=covariance)
