"""Rigid transforms: quaternions (x, y, z, w), 4x4 matrices, the camera's optical frame.

Poses of places and of the query are poses of the camera *body* frame in the map frame
(REP 103: x forward, y left, z up), as the synthetic route and the map store them. Pixels and
depth live in the *optical* frame (REP 103 ``_optical``: x right, y down, z forward), which is a
fixed rotation of the body frame, :data:`OPTICAL_IN_BODY`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selavpr_ros.io.poses import normalize_quaternion

Quat = tuple[float, float, float, float]

# columns: the optical x (right), y (down), z (forward) axes expressed in the body frame
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0],
                            [-1.0, 0.0, 0.0],
                            [0.0, -1.0, 0.0]])


def quaternion_to_matrix(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w); normalised first."""
    x, y, z, w = normalize_quaternion(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(rotation: np.ndarray) -> Quat:
    """Quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix (Shepperd's method)."""
    m = np.asarray(rotation, np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    x, y, z, w = normalize_quaternion(q)
    if w < 0:
        x, y, z, w = -x, -y, -z, -w
    return (x, y, z, w)


def pose_matrix(position: Sequence[float], orientation: Sequence[float]) -> np.ndarray:
    """4x4 homogeneous transform (parent <- child) from a position and a quaternion."""
    t = np.eye(4)
    t[:3, :3] = quaternion_to_matrix(orientation)
    t[:3, 3] = np.asarray(position, np.float64)
    return t


def matrix_to_pose(transform: np.ndarray) -> tuple[tuple[float, float, float], Quat]:
    """(position, quaternion) of a 4x4 transform."""
    t = np.asarray(transform, np.float64)
    x, y, z = (float(v) for v in t[:3, 3])
    return (x, y, z), matrix_to_quaternion(t[:3, :3])


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    t = np.asarray(transform, np.float64)
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def project_to_rotation(m: np.ndarray) -> np.ndarray:
    """Find the rotation nearest to ``m`` in the Frobenius norm (SVD, determinant +1)."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def mean_rotation(rotations: Sequence[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean of rotations: the rotation nearest to their arithmetic mean.

    It minimises the sum of squared Frobenius distances, needs no iteration, and for rotations
    a few degrees apart equals the geodesic mean to well below their spread.
    """
    if not rotations:
        raise ValueError("no rotations to average")
    return project_to_rotation(np.sum(np.asarray(rotations, np.float64), axis=0))


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a 3x3 rotation (the log map)."""
    m = np.asarray(rotation, np.float64)
    cos = np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
    if angle < 1e-7:
        return axis / 2.0
    if np.pi - angle < 1e-4:  # near 180 deg the antisymmetric part vanishes
        w, v = np.linalg.eigh((m + m.T) / 2.0)
        return v[:, int(np.argmax(w))] * angle
    return axis * (angle / (2.0 * np.sin(angle)))


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees of the rotation between two 3x3 rotations."""
    return float(np.degrees(np.linalg.norm(rotation_vector(np.asarray(a).T @ np.asarray(b)))))


def camera_to_base(camera_in_map: np.ndarray, camera_in_base: np.ndarray) -> np.ndarray:
    """Get the robot's pose in the map (map <- base) from the camera's (map <- camera).

    ``camera_in_base`` is the base <- camera transform (what TF returns for
    ``lookup_transform(base_frame, camera_frame)``).
    """
    return np.asarray(camera_in_map, np.float64) @ invert(camera_in_base)


def optical_pose(body_in_map: np.ndarray,
                 optical_in_body: np.ndarray = OPTICAL_IN_BODY) -> np.ndarray:
    """Turn map <- body into map <- optical."""
    out = np.asarray(body_in_map, np.float64).copy()
    out[:3, :3] = out[:3, :3] @ optical_in_body
    return out


def body_pose(optical_in_map: np.ndarray,
              optical_in_body: np.ndarray = OPTICAL_IN_BODY) -> np.ndarray:
    """Turn map <- optical into map <- body."""
    out = np.asarray(optical_in_map, np.float64).copy()
    out[:3, :3] = out[:3, :3] @ np.asarray(optical_in_body).T
    return out
