"""Where the query camera is, without ROS.

Camera models, feature pixels and 3-D points, MNN pairs, and the metric pose estimators
(PnP with depth, two-view without, keyframe fallback).
"""

from selavpr_ros.geometry.camera import CameraModel, CameraModelError
from selavpr_ros.geometry.correspondences import MatchPairs, mnn_pairs
from selavpr_ros.geometry.depth import DepthImageError, depth_in_metres, feature_points
from selavpr_ros.geometry.observations import ImageFeatures, observe_place
from selavpr_ros.geometry.pixels import feature_pixels, grid_pixels
from selavpr_ros.geometry.pose import (
    PlaceObservation,
    PlaceView,
    PoseConfig,
    PoseEstimate,
    estimate_pnp,
    estimate_query_pose,
    estimate_triangulated,
    estimate_two_view,
    keyframe_estimate,
    points_in_map,
)

__all__ = [
    "CameraModel", "CameraModelError", "DepthImageError", "ImageFeatures", "MatchPairs",
    "PlaceObservation", "PlaceView", "PoseConfig", "PoseEstimate", "depth_in_metres",
    "estimate_pnp", "estimate_query_pose", "estimate_triangulated", "estimate_two_view",
    "feature_pixels", "feature_points", "grid_pixels", "keyframe_estimate", "mnn_pairs",
    "observe_place", "points_in_map",
]
