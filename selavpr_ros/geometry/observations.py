"""From two images' local features to a :class:`PlaceObservation`.

This is what the localizer does per accepted candidate before :func:`estimate_query_pose`.
The MNN pairs are the re-ranking's own (:func:`selavpr_ros.matching.mnn_matches`), their
feature indices become pixels (grid cells through the resize, or keypoints), and a place with
depth contributes the stored 3-D points of its matched features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.geometry.pixels import feature_pixels
from selavpr_ros.geometry.pose import PlaceObservation
from selavpr_ros.geometry.transforms import Quat
from selavpr_ros.matching import MatchPairs


@dataclass(frozen=True, eq=False)
class ImageFeatures:
    """One image's local features with what geometry needs besides them.

    Attributes:
        local: (L, C) local features (read only to refine query pixels against them).
        mask: (L,) valid features, or None.
        keypoints: (L, 2) pixel coordinates for keypoint extractors, or None.
        image_hw: the original image's (height, width).
        points: (L, 3) optical-frame points from depth (NaN rows: none), or None.
        grid_index: (L,) the extractor-grid index of each feature when a map stores a
            subsampled grid (``--local-stride``), or None (feature i is grid cell i).
    """

    local: np.ndarray
    mask: np.ndarray | None
    keypoints: np.ndarray | None
    image_hw: tuple[int, int]
    points: np.ndarray | None = None
    grid_index: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: Features, index: int, image_hw: tuple[int, int],
                      points: np.ndarray | None = None,
                      grid_index: np.ndarray | None = None) -> ImageFeatures:
        return cls(
            features.local[index],
            None if features.local_mask is None else features.local_mask[index],
            None if features.keypoints is None else features.keypoints[index],
            (int(image_hw[0]), int(image_hw[1])),
            points,
            grid_index,
        )

    def grid_cells(self, indices: np.ndarray) -> np.ndarray:
        """Extractor-grid indices of features ``indices`` (the stored grid may be subsampled)."""
        return indices if self.grid_index is None else self.grid_index[indices]


def observe_place(
    info: ExtractorInfo,
    query: ImageFeatures,
    place: ImageFeatures,
    pairs: MatchPairs,
    place_id: int,
    position: tuple[float, float, float],
    orientation: Quat | None,
    camera: CameraModel,
    refine_query: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> PlaceObservation:
    """Turn the query's MNN ``pairs`` with one place into pixels (and the place's points).

    ``pairs`` index the features of ``query`` and ``place`` as stored (see ``grid_index``).
    ``refine_query(query_indices, place_descriptors)``, when given, returns better query pixels
    than the feature grid's (e.g. :class:`selavpr_ros.geometry.refine.ClassicalRefiner`).
    """
    query_cells = query.grid_cells(pairs.query)
    if refine_query is not None and len(pairs):
        query_px = refine_query(query_cells, np.asarray(place.local)[pairs.place])
    else:
        query_px = feature_pixels(info, query.image_hw, query_cells, query.keypoints)
    place_px = feature_pixels(info, place.image_hw, place.grid_cells(pairs.place),
                              place.keypoints)
    points = None
    if place.points is not None:
        points = np.asarray(place.points, np.float32)[pairs.place]
    return PlaceObservation(place_id, position, orientation, camera, query_px, place_px, points,
                            pairs.query)
