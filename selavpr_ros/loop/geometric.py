"""Geometric verification of a loop: essential-matrix RANSAC inliers of the MNN pairs.

Two views of the same place share a rigid motion; a lookalike place does not, so its MNN pairs
scatter and few survive an essential matrix. Needs the camera (camera info) and extractor
keypoints; the inlier count is compared with ``LoopConfig.min_inliers``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from selavpr_ros.extractors.base import Features, RerankSettings

if TYPE_CHECKING:
    from selavpr_ros.geometry.camera import CameraModel

THRESHOLD_PX = 2.0


def essential_inliers(query: Features, place_local: np.ndarray, place_mask: np.ndarray | None,
                      place_keypoints: np.ndarray, camera: CameraModel,
                      rerank: RerankSettings) -> int:
    """Return how many MNN pairs fit one essential matrix (0 when fewer than 8 pairs)."""
    from selavpr_ros.geometry.correspondences import mnn_pairs

    if query.keypoints is None:
        return 0
    pairs = mnn_pairs(query.local[0], place_local,
                      query_mask=None if query.local_mask is None else query.local_mask[0],
                      place_mask=place_mask, rerank=rerank)
    if len(pairs) < 8:
        return 0
    xq = camera.normalized(np.asarray(query.keypoints[0], np.float64)[pairs.query])
    xp = camera.normalized(np.asarray(place_keypoints, np.float64)[pairs.place])
    try:
        e, mask = cv2.findEssentialMat(xp, xq, np.eye(3), method=cv2.RANSAC, prob=0.999,
                                       threshold=THRESHOLD_PX / camera.focal_px)
    except cv2.error:
        return 0
    if e is None or mask is None or e.shape[0] < 3:
        return 0
    good, _, _, _ = cv2.recoverPose(e[:3], xp, xq, np.eye(3), mask=mask.copy())
    return int(good)
