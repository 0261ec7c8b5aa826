"""Core results to ROS messages, and ROS stamps to nanoseconds.

Kept apart from the nodes so that the map builder, the localizer node and the bag tools convert
the same way, and so the conversions can be tested without spinning a node.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseWithCovarianceStamped, Quaternion
from std_msgs.msg import Float64MultiArray, Header
from visualization_msgs.msg import Marker, MarkerArray

from selavpr_msgs.msg import PlaceCandidate, PlaceRecognition, StageTiming
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


def scaled_covariance(base_diagonal: Sequence[float], confidence: float,
                      min_confidence: float = 0.05) -> list[float]:
    """Row-major 6x6 covariance: the configured diagonal divided by the confidence.

    A confident match keeps the configured uncertainty; a weak one is inflated (at most by
    ``1 / min_confidence``), so a consumer that weights by covariance trusts it less.
    """
    scale = 1.0 / max(float(confidence), min_confidence)
    covariance = [0.0] * 36
    for i, value in enumerate(base_diagonal):
        covariance[i * 7] = float(value) * scale
    return covariance


def result_to_msg(result: LocalizationResult, header: Header, *, max_candidates: int,
                  covariance_diagonal: Sequence[float], map_frame: str | None = None,
                  extra_stages: Sequence[tuple[str, float]] = (), processing_ms: float = 0.0,
                  latency_ms: float = 0.0) -> PlaceRecognition:
    """Return the PlaceRecognition of one processed frame (header = the image's header)."""
    msg = PlaceRecognition()
    msg.header = header
    msg.map_id = result.map_id
    msg.map_frame = map_frame or result.map_frame
    msg.candidates = [candidate_msg(c) for c in result.candidates[:max_candidates]]
    msg.accepted = bool(result.accepted)
    msg.confidence = float(result.confidence)
    msg.reject_reason = result.reject_reason
    if result.matched is not None:
        msg.matched_place_id = int(result.matched.place_id)
        msg.matched_place_stamp = ns_to_stamp(result.matched.place_stamp_ns)
        msg.matched_pose.pose = candidate_pose(result.matched)
        msg.matched_pose.covariance = scaled_covariance(covariance_diagonal, result.confidence)
    msg.stages = [StageTiming(stage=name, ms=float(ms))
                  for name, ms in (*extra_stages, *result.stages)]
    msg.processing_ms = float(processing_ms)
    msg.latency_ms = float(latency_ms)
    return msg


def pose_msg(recognition: PlaceRecognition) -> PoseWithCovarianceStamped:
    """Return the accepted place's pose, stamped with the query's time, in the map frame."""
    out = PoseWithCovarianceStamped()
    out.header.stamp = recognition.header.stamp
    out.header.frame_id = recognition.map_frame
    out.pose = recognition.matched_pose
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
