"""Core results to ROS messages, and ROS stamps to nanoseconds.

Kept apart from the nodes so that the map builder, the localizer node and the bag tools convert
the same way, and so the conversions can be tested without spinning a node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import (
    Point,
    Pose,
    PoseWithCovarianceStamped,
    Quaternion,
    TransformStamped,
    Vector3,
)
from std_msgs.msg import Float64MultiArray, Header
from visualization_msgs.msg import Marker, MarkerArray

from selavpr_msgs.msg import PlaceCandidate, PlaceRecognition, StageTiming
from selavpr_ros.geometry import PoseEstimate
from selavpr_ros.geometry.pose import UNKNOWN_VARIANCE
from selavpr_ros.geometry.transforms import matrix_to_pose, pose_matrix
from selavpr_ros.localizer import Candidate, LocalizationResult


def stamp_to_ns(stamp: Time) -> int:
    """Return a builtin_interfaces/Time as integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds as builtin_interfaces/Time (non-negative)."""
    ns = max(int(ns), 0)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def candidate_pose(candidate: Candidate) -> Pose:
    """Return the candidate's pose; identity at the origin when the map has none (see has_pose)."""
    pose = Pose()
    if candidate.position is not None:
        pose.position = Point(x=candidate.position[0], y=candidate.position[1],
                              z=candidate.position[2])
    if candidate.orientation is not None:
        qx, qy, qz, qw = candidate.orientation
        pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
    return pose


def candidate_msg(candidate: Candidate) -> PlaceCandidate:
    return PlaceCandidate(
        place_id=int(candidate.place_id),
        place_stamp=ns_to_stamp(candidate.place_stamp_ns),
        pose=candidate_pose(candidate),
        has_pose=candidate.has_pose,
        global_similarity=float(candidate.global_similarity),
        rerank_score=float(candidate.rerank_score),
        global_rank=int(candidate.global_rank),
    )


def estimate_pose(estimate: PoseEstimate) -> tuple[Pose, list[float]]:
    """Return a pose estimate as a Pose and its row-major 6x6 covariance.

    An unknown orientation becomes the identity with rotation variances UNKNOWN_VARIANCE.
    """
    pose = Pose()
    if estimate.position is not None:
        x, y, z = estimate.position
        pose.position = Point(x=float(x), y=float(y), z=float(z))
    if estimate.orientation is not None:
        qx, qy, qz, qw = estimate.orientation
        pose.orientation = Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw))
    covariance = [0.0] * 36
    if estimate.covariance is not None:
        covariance = [float(v) for v in estimate.covariance.reshape(-1)]
    if estimate.orientation is None:
        for i in range(3, 6):
            covariance[i * 7] = UNKNOWN_VARIANCE
    return pose, covariance


def result_to_msg(result: LocalizationResult, header: Header, *, max_candidates: int,
                  map_frame: str | None = None, pose: PoseEstimate | None = None,
                  pose_frame: str = "", extra_stages: Sequence[tuple[str, float]] = (),
                  processing_ms: float = 0.0, latency_ms: float = 0.0) -> PlaceRecognition:
    """Return the PlaceRecognition of one processed frame (header = the image's header).

    ``pose`` replaces the result's own estimate (the node's robot pose); ``pose_frame`` is the
    frame it places (default: the image's frame).
    """
    msg = PlaceRecognition()
    msg.header = header
    msg.map_id = result.map_id
    msg.map_frame = map_frame or result.map_frame
    msg.candidates = [candidate_msg(c) for c in result.candidates[:max_candidates]]
    msg.accepted = bool(result.accepted)
    msg.confidence = float(result.confidence)
    msg.reject_reason = result.reject_reason
    msg.pose_source = PlaceRecognition.POSE_NONE
    msg.pose_reprojection_error = math.nan
    if result.matched is not None:
        msg.matched_place_id = int(result.matched.place_id)
        msg.matched_place_stamp = ns_to_stamp(result.matched.place_stamp_ns)
    estimate = pose or result.pose
    if result.matched is not None and estimate is not None:
        msg.pose_source = estimate.source
        msg.pose_reason = estimate.reason
        msg.pose_inliers = int(estimate.inliers)
        msg.pose_reprojection_error = float(estimate.reprojection_error_px)
        if estimate.position is not None:
            msg.matched_pose.pose, msg.matched_pose.covariance = estimate_pose(estimate)
            msg.pose_has_orientation = estimate.orientation is not None
            msg.pose_frame = pose_frame or header.frame_id
    msg.stages = [StageTiming(stage=name, ms=float(ms))
                  for name, ms in (*extra_stages, *result.stages)]
    msg.processing_ms = float(processing_ms)
    msg.latency_ms = float(latency_ms)
    return msg


def has_publishable_pose(recognition: PlaceRecognition) -> bool:
    """Tell whether the message carries a full pose (never one of unknown orientation)."""
    return (recognition.accepted and recognition.pose_source != PlaceRecognition.POSE_NONE
            and recognition.pose_has_orientation)


def pose_msg(recognition: PlaceRecognition) -> PoseWithCovarianceStamped:
    """Return the query's pose, stamped with the query's time, in the map frame."""
    out = PoseWithCovarianceStamped()
    out.header.stamp = recognition.header.stamp
    out.header.frame_id = recognition.map_frame
    out.pose = recognition.matched_pose
    return out


def transform_matrix(transform: TransformStamped) -> np.ndarray:
    """Return a TransformStamped as the 4x4 parent <- child matrix."""
    t, q = transform.transform.translation, transform.transform.rotation
    return pose_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def transform_msg(matrix: np.ndarray, parent: str, child: str, stamp: Time) -> TransformStamped:
    """Return a 4x4 parent <- child matrix as a TransformStamped."""
    (x, y, z), (qx, qy, qz, qw) = matrix_to_pose(matrix)
    out = TransformStamped()
    out.header.stamp = stamp
    out.header.frame_id = parent
    out.child_frame_id = child
    out.transform.translation = Vector3(x=x, y=y, z=z)
    out.transform.rotation = Quaternion(x=qx, y=qy, z=qz, w=qw)
    return out


def loop_closure_msg(recognition: PlaceRecognition) -> Float64MultiArray:
    """LIO-SAM style loop closure: [query time, matched place time] in seconds."""
    return Float64MultiArray(data=[stamp_to_ns(recognition.header.stamp) / 1e9,
                                   stamp_to_ns(recognition.matched_place_stamp) / 1e9])


def candidate_markers(recognition: PlaceRecognition, lifetime_s: float = 1.0) -> MarkerArray:
    """Spheres at the candidates' positions (green = accepted best, size by rank) for RViz."""
    markers = MarkerArray()
    markers.markers.append(Marker(action=Marker.DELETEALL))
    for rank, cand in enumerate(recognition.candidates):
        if not cand.has_pose:
            continue
        marker = Marker()
        marker.header.stamp = recognition.header.stamp
        marker.header.frame_id = recognition.map_frame
        marker.ns = "selavpr_candidates"
        marker.id = rank
        marker.type = Marker.SPHERE
        marker.action = Marker.ADD
        marker.pose = cand.pose
        size = 1.5 if rank == 0 else max(0.3, 1.0 - 0.07 * rank)
        marker.scale.x = marker.scale.y = marker.scale.z = size
        best = rank == 0 and recognition.accepted
        marker.color.r, marker.color.g, marker.color.b = (0.1, 0.9, 0.1) if best else (
            0.9, 0.6, 0.1)
        marker.color.a = 0.9
        marker.lifetime.sec = int(lifetime_s)
        marker.lifetime.nanosec = int((lifetime_s - math.floor(lifetime_s)) * 1e9)
        markers.markers.append(marker)
    return markers
