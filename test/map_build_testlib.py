"""Shared inputs for the map-building tests: a known trajectory, images, bags and a checkpoint.

The trajectory is analytic (constant velocity along a line, constant yaw rate), so the pose
expected at any stamp is computed here from the formula, never by the interpolation under test:
linear interpolation of a linear path and slerp of a constant-rate rotation about one axis are
both exact. Bags are written with plain ``rosbags`` calls, not with the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from selavpr_ros.model import SelaVPR, SelaVPRConfig, save_safetensors

TS = get_typestore(Stores.ROS2_JAZZY)
T0_NS = 1_700_000_000_000_000_000  # epoch stamps need integer ns
VELOCITY = (0.8, 0.3, 0.0)  # m/s
Z0 = 0.5
YAW_RATE = 0.4  # rad/s
YAW0 = 0.2
IMAGE_HW = (48, 64)


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a one-block ViT-S SelaVPR at 112x112 input, random weights, as safetensors."""
    torch.manual_seed(seed)
    model = SelaVPR(SelaVPRConfig(backbone="vits14", depth=1, image_size=112)).eval()
    return save_safetensors(model, path)


def true_pose(stamp_ns: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return the analytic pose at ``stamp_ns``: position and quaternion (x, y, z, w)."""
    t = (stamp_ns - T0_NS) / 1e9
    position = (VELOCITY[0] * t, VELOCITY[1] * t, Z0 + VELOCITY[2] * t)
    yaw = YAW0 + YAW_RATE * t
    return position, (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def frame_image(index: int, hw: tuple[int, int] = IMAGE_HW) -> np.ndarray:
    """Make a distinct RGB image per index (smooth noise plus a coloured block)."""
    rng = np.random.default_rng(1000 + index)
    h, w = hw
    img = cv2.resize(rng.integers(0, 256, (h // 4, w // 4, 3), dtype=np.uint8), (w, h),
                     interpolation=cv2.INTER_LINEAR)
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 256, 3, dtype=np.uint8)
    return img


def image_stamps(count: int, rate_hz: float = 10.0, offset_ns: int = 13_000_000) -> list[int]:
    return [T0_NS + offset_ns + round(i * 1e9 / rate_hz) for i in range(count)]


def odom_stamps(duration_s: float, rate_hz: float = 25.0) -> list[int]:
    n = int(duration_s * rate_hz) + 1
    return [T0_NS + round(i * 1e9 / rate_hz) for i in range(n)]


def _header(stamp_ns: int, frame_id: str):  # noqa: ANN202
    t = TS.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


def image_msg(stamp_ns: int, rgb: np.ndarray, encoding: str = "rgb8",
              frame_id: str = "cam"):  # noqa: ANN201
    """Make a sensor_msgs/Image in ``encoding``, converted here with plain OpenCV/numpy."""
    if encoding == "rgb8":
        data = rgb
    elif encoding == "bgr8":
        data = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        data = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    elif encoding == "bgra8":
        data = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    elif encoding == "mono8":
        data = rgb[:, :, 0]
    elif encoding == "mono16":
        data = rgb[:, :, 0].astype("<u2") * 257
    else:
        raise ValueError(encoding)
    data = np.ascontiguousarray(data)
    return TS.types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, frame_id), height=rgb.shape[0], width=rgb.shape[1],
        encoding=encoding, is_bigendian=0, step=data.strides[0],
        data=np.frombuffer(data.tobytes(), np.uint8))


def compressed_msg(stamp_ns: int, rgb: np.ndarray, fmt: str = "png",
                   frame_id: str = "cam"):  # noqa: ANN201
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", rgb[:, :, ::-1])
    assert ok
    return TS.types["sensor_msgs/msg/CompressedImage"](
        header=_header(stamp_ns, frame_id), format=fmt, data=buf.reshape(-1))


def pose_msg(stamp_ns: int, kind: str = "odometry", frame_id: str = "odom"):  # noqa: ANN201
    t = TS.types
    (x, y, z), (qx, qy, qz, qw) = true_pose(stamp_ns)
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                       orientation=t["geometry_msgs/msg/Quaternion"](
                                           x=qx, y=qy, z=qz, w=qw))
    header = _header(stamp_ns, frame_id)
    with_cov = t["geometry_msgs/msg/PoseWithCovariance"](pose=pose,
                                                         covariance=np.zeros(36, np.float64))
    if kind == "pose":
        return "geometry_msgs/msg/PoseStamped", t["geometry_msgs/msg/PoseStamped"](
            header=header, pose=pose)
    if kind == "pose_cov":
        return ("geometry_msgs/msg/PoseWithCovarianceStamped",
                t["geometry_msgs/msg/PoseWithCovarianceStamped"](header=header, pose=with_cov))
    zero = t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    twist = t["geometry_msgs/msg/TwistWithCovariance"](
        twist=t["geometry_msgs/msg/Twist"](linear=zero, angular=zero),
        covariance=np.zeros(36, np.float64))
    return "nav_msgs/msg/Odometry", t["nav_msgs/msg/Odometry"](
        header=header, child_frame_id="base_link", pose=with_cov, twist=twist)


def write_drive_bag(
    path: Path,
    n_images: int,
    *,
    storage: str = "sqlite3",
    image: str = "raw",  # "raw" (encoding) or "png"/"jpeg"
    encoding: str = "rgb8",
    pose_kind: str = "odometry",
    odom_rate: float = 25.0,
    odom_extra_s: float = 0.2,
    image_topic: str = "/camera/image_raw",
    pose_topic: str = "/odom",
    corrupt: tuple[int, ...] = (),
) -> list[int]:
    """Write a drive: images at 10 Hz between odometry at ``odom_rate``; return image stamps.

    Odometry covers [T0, last image + ``odom_extra_s``]; image ``i`` shows ``frame_image(i)``;
    images listed in ``corrupt`` carry undecodable bytes.
    """
    stamps = image_stamps(n_images)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    records = []
    for i, s in enumerate(stamps):
        rgb = frame_image(i)
        if image == "raw":
            msgtype, msg = "sensor_msgs/msg/Image", image_msg(s, rgb, encoding)
        else:
            msgtype, msg = "sensor_msgs/msg/CompressedImage", compressed_msg(s, rgb, image)
            if i in corrupt:
                msg = TS.types[msgtype](header=msg.header, format=image,
                                        data=np.frombuffer(b"not an image" * 4, np.uint8))
        records.append((s, image_topic, msgtype, msg))
    duration = (stamps[-1] - T0_NS) / 1e9 + odom_extra_s
    for s in odom_stamps(duration, odom_rate):
        msgtype, msg = pose_msg(s, pose_kind)
        records.append((s, pose_topic, msgtype, msg))
    records.sort(key=lambda r: r[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for s, topic, msgtype, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS)
            writer.write(conns[topic], s, TS.serialize_cdr(msg, msgtype))
    return stamps


def assert_same_rotation(q: tuple[float, ...], expected: tuple[float, ...], tol: float) -> None:
    """Q and -q are the same rotation."""
    dot = abs(float(np.dot(q, expected)))
    assert dot > 1.0 - tol, (q, expected)


def assert_fp16_close(a: np.ndarray, b: np.ndarray, ulps: int = 2) -> None:
    """Check ``a`` and ``b`` (float16) are equal up to fp16 rounding: at most ``ulps`` apart.

    The same images extracted in batches of other sizes give fp32 results that differ in the
    last bits (BLAS picks other kernels per shape, and which ones differs between CPUs); after
    rounding to float16 that can flip the last bit of some values. The bound is in float16
    units in the last place at the larger of the two magnitudes.
    """
    assert a.shape == b.shape and a.dtype == b.dtype == np.float16
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    ulp = np.spacing(np.maximum(np.abs(a), np.abs(b))).astype(np.float32)
    excess = np.abs(a32 - b32) - ulps * ulp
    assert np.all(excess <= 0), (
        f"{int(np.sum(excess > 0))} of {a.size} values differ by more than {ulps} fp16 ulp "
        f"(largest difference {float(np.max(np.abs(a32 - b32)))})")
