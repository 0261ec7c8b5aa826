"""Reading camera frames with poses from rosbag2 files, and writing such bags, without ROS.

Uses ``rosbags`` (pure Python) with the Jazzy typestore, so sqlite3 and mcap bags are read on any
machine. Each image gets the pose interpolated at its stamp from the pose topic (see
:mod:`selavpr_ros.io.poses`). Stamps are the messages' header stamps; a header stamp of zero
(unset) falls back to the time the message was recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from selavpr_ros.closing import Closing
from selavpr_ros.errors import BagReadError, ConfigError, ImageDecodeError
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.images import decode_image_message, encode_compressed, encode_raw
from selavpr_ros.io.poses import Pose, PoseTrack, check_stamp_ns

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_WITH_COVARIANCE_STAMPED = "geometry_msgs/msg/PoseWithCovarianceStamped"

IMAGE_TYPES: tuple[str, ...] = (IMAGE, COMPRESSED_IMAGE)
# message type -> the geometry_msgs/Pose inside it
POSE_TYPES: dict[str, Callable[[Any], Any]] = {
    ODOMETRY: lambda msg: msg.pose.pose,
    POSE_STAMPED: lambda msg: msg.pose,
    POSE_WITH_COVARIANCE_STAMPED: lambda msg: msg.pose.pose,
}
STORAGES: tuple[str, ...] = ("sqlite3", "mcap")

_typestore: Typestore | None = None


def typestore() -> Typestore:
    """Return the ROS 2 Jazzy message definitions (built once)."""
    global _typestore
    if _typestore is None:
        _typestore = get_typestore(Stores.ROS2_JAZZY)
    return _typestore


def header_stamp_ns(msg: Any, record_ns: int) -> int:
    """Return the message's header stamp in ns, or the record time when the stamp is unset.

    Raises:
        ValueError: the stamp is outside what a map stores (negative, beyond 2**63-1 ns).
    """
    stamp = msg.header.stamp
    ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    return check_stamp_ns(ns if ns != 0 else int(record_ns))


def pose_of_message(msg: Any, msgtype: str, stamp_ns: int) -> Pose:
    """Read a :class:`Pose` from an Odometry, PoseStamped or PoseWithCovarianceStamped message."""
    pose = POSE_TYPES[msgtype](msg)
    p, q = pose.position, pose.orientation
    return Pose(stamp_ns, (p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def open_bag_reader(path: Path) -> AnyReader:
    """Open a rosbags reader of a rosbag2; BagReadError when it is missing or unreadable."""
    if not path.exists():
        raise BagReadError(f"bag {path} does not exist")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as err:
        raise BagReadError(f"cannot read bag {path}: {err}") from err
    return reader


class BagFrames(Closing):
    """A rosbag2 (sqlite3 or mcap) opened for reading camera frames and poses.

    Use as a context manager. Raises BagReadError when the bag cannot be opened or lacks a
    requested topic (naming the bag's topics and their types).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader = open_bag_reader(self.path)
        self.corrupt: dict[str, int] = {}  # topic -> messages skipped as unreadable

    def close(self) -> None:
        self._reader.close()


    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """Map each topic to (message type, message count)."""
        out: dict[str, tuple[str, int]] = {}
        for conn in self._reader.connections:
            msgtype, count = out.get(conn.topic, (conn.msgtype, 0))
            out[conn.topic] = (msgtype, count + conn.msgcount)
        return out

    def _describe_topics(self) -> str:
        listed = ", ".join(f"{t} [{m}]" for t, (m, _) in sorted(self.topics.items()))
        return listed or "none"

    def topic_of(self, topic: str | None, types: tuple[str, ...], what: str) -> tuple[str, str]:
        """(topic, type): ``topic`` checked against ``types``, or the only topic of those types.

        Raises:
            BagReadError: the topic is missing or of another type, or (no topic given) the bag
                has no topic or several topics of ``types``.
        """
        topics = self.topics
        if topic:
            if topic not in topics:
                raise BagReadError(
                    f"bag {self.path} has no {what} topic '{topic}'; its topics: "
                    f"{self._describe_topics()}"
                )
            msgtype = topics[topic][0]
            if msgtype not in types:
                raise BagReadError(
                    f"topic '{topic}' in {self.path} is {msgtype}, not a {what} topic "
                    f"({', '.join(types)})"
                )
            return topic, msgtype
        found = sorted(t for t, (m, _) in topics.items() if m in types)
        if len(found) != 1:
            reason = "no" if not found else f"{len(found)} ({', '.join(found)})"
            raise BagReadError(
                f"bag {self.path} has {reason} {what} topics; name one. Its topics: "
                f"{self._describe_topics()}"
            )
        return found[0], topics[found[0]][0]

    def _connections(self, topic: str) -> list[Any]:
        return [c for c in self._reader.connections if c.topic == topic]

    def read_poses(self, topic: str | None = None) -> tuple[PoseTrack, str]:
        """All poses of ``topic`` (or the bag's only pose topic) and their frame id."""
        topic, msgtype = self.topic_of(topic, tuple(POSE_TYPES), "pose")
        track = PoseTrack()
        frame_id = ""
        records = self._reader.messages(connections=self._connections(topic))
        for index, (conn, record_ns, raw) in enumerate(records):
            msg, _ = self._deserialize(raw, conn.msgtype, topic, index)
            if msg is None:
                continue
            try:
                stamp = header_stamp_ns(msg, record_ns)
                track.add(pose_of_message(msg, msgtype, stamp))
            except ValueError as err:  # zero quaternion, NaN position, stamp out of range
                log.warning("%s: skipping pose message %d: %s", topic, index, err)
                continue
            frame_id = frame_id or str(msg.header.frame_id)
        if self.corrupt.get(topic):
            log.warning("%s: %d corrupt messages of %s skipped", self.path, self.corrupt[topic],
                        topic)
        return track, frame_id

    def read_camera_info(self, topic: str | None = None) -> tuple[Any, str]:
        """Return the camera model of ``topic`` (or the only CameraInfo topic) and the topic.

        (None, "") when no topic is named and the bag has no CameraInfo topic; the first
        valid message is used (a calibration does not change during a drive).

        Raises:
            BagReadError: a named topic is missing, or no message holds a valid calibration.
        """
        from selavpr_ros.geometry.camera import CameraModel, CameraModelError

        types = ("sensor_msgs/msg/CameraInfo",)
        if not topic and not any(m in types for m, _ in self.topics.values()):
            return None, ""
        topic, _ = self.topic_of(topic, types, "camera info")
        last_error = "no messages"
        records = self._reader.messages(connections=self._connections(topic))
        for index, (conn, _, raw) in enumerate(records):
            msg, _why = self._deserialize(raw, conn.msgtype, topic, index)
            if msg is None:
                continue
            fields = {"width": int(msg.width), "height": int(msg.height),
                      "distortion_model": str(msg.distortion_model),
                      "d": list(msg.d), "k": list(msg.k), "r": list(msg.r), "p": list(msg.p),
                      "binning_x": int(msg.binning_x), "binning_y": int(msg.binning_y)}
            try:
                return CameraModel.from_camera_info(fields), topic
            except CameraModelError as err:
                last_error = str(err)
        raise BagReadError(f"{self.path}: {topic} holds no valid calibration ({last_error})")

    def _deserialize(
        self, raw: bytes, msgtype: str, topic: str, index: int
    ) -> tuple[Any | None, str]:
        """Deserialise a record: (message, "") or, when its bytes are corrupt, (None, why).

        A corrupt record is logged and counted in ``corrupt``.
        """
        try:
            return self._reader.deserialize(raw, msgtype), ""
        except Exception as err:  # noqa: BLE001 - rosbags raises many types on corrupt CDR
            self.corrupt[topic] = self.corrupt.get(topic, 0) + 1
            why = f"corrupt message ({len(raw)} bytes): {type(err).__name__}: {err}"
            log.warning("%s: %s message %d: %s", self.path, topic, index, why)
            return None, why

    def frames(
        self,
        image_topic: str | None,
        poses: PoseTrack,
        tolerance_ns: int,
    ) -> Iterator[Frame]:
        """Frames of ``image_topic`` in recording order, each with its interpolated pose.

        ``source_ref`` is the message's index on the topic. The pixels are decoded when the
        frame's ``load`` is called.
        """
        topic, _ = self.topic_of(image_topic, IMAGE_TYPES, "image")
        source = f"{self.path.resolve()}#{topic}"
        index = 0
        for conn, record_ns, raw in self._reader.messages(connections=self._connections(topic)):
            msg, why = self._deserialize(raw, conn.msgtype, topic, index)
            stamp = None
            if msg is not None:
                try:
                    stamp = header_stamp_ns(msg, record_ns)
                except ValueError as err:
                    why = str(err)
            if msg is None or stamp is None:
                yield Frame(stamp_ns=0, load=_undecodable, pose=None, source=source,
                            source_ref=str(index), damaged=why)
            else:
                yield Frame(
                    stamp_ns=stamp,
                    load=_decoder(msg),
                    pose=poses.at(stamp, tolerance_ns),
                    source=source,
                    source_ref=str(index),
                    frame_id=str(msg.header.frame_id),
                )
            index += 1

    def count(self, topic: str) -> int:
        return self.topics.get(topic, ("", 0))[1]

    def with_depth(self, frames: Iterator[Frame], depth_topic: str,
                   tolerance_ns: int) -> Iterator[Frame]:
        """Attach the depth image of ``depth_topic`` with each frame's stamp.

        The nearest within ``tolerance_ns``; depth messages are read alongside, only a short
        window of them kept in memory.
        """
        import dataclasses

        depth_topic, _ = self.topic_of(depth_topic, (IMAGE,), "depth")
        depths: dict[int, Any] = {}
        reader = self._reader.messages(connections=self._connections(depth_topic))
        latest = -1
        exhausted = False
        for index, frame in enumerate(frames):
            # read depth until past this frame's stamp (plus the tolerance)
            while not exhausted and latest <= frame.stamp_ns + tolerance_ns:
                record = next(reader, None)
                if record is None:
                    exhausted = True
                    break
                conn, record_ns, raw = record
                msg, _ = self._deserialize(raw, conn.msgtype, depth_topic, index)
                if msg is None:
                    continue
                try:
                    latest = header_stamp_ns(msg, record_ns)
                except ValueError:
                    continue
                depths[latest] = msg
            for stamp in [s for s in depths if s < frame.stamp_ns - tolerance_ns]:
                del depths[stamp]
            near = [s for s in depths if abs(s - frame.stamp_ns) <= tolerance_ns]
            if not near or frame.damaged:
                yield dataclasses.replace(frame, depth=_no_depth(depth_topic, frame.stamp_ns))
                continue
            msg = depths[min(near, key=lambda s: abs(s - frame.stamp_ns))]
            yield dataclasses.replace(frame, depth=_depth_decoder(msg))


def _no_depth(topic: str, stamp_ns: int) -> Callable[[], tuple[np.ndarray, str]]:
    def load() -> tuple[np.ndarray, str]:
        from selavpr_ros.geometry.depth import DepthImageError

        raise DepthImageError(f"no {topic} message near the image stamp {stamp_ns}")

    return load


def depth_decoder(msg: Any) -> Callable[[], tuple[np.ndarray, str]]:
    """Return a loader of a depth ``sensor_msgs/Image`` (rosbags or rclpy message)."""
    return _depth_decoder(msg)


def _depth_decoder(msg: Any) -> Callable[[], tuple[np.ndarray, str]]:
    def load() -> tuple[np.ndarray, str]:
        from selavpr_ros.geometry.depth import DEPTH_ENCODINGS, DepthImageError

        encoding = str(msg.encoding)
        if encoding not in DEPTH_ENCODINGS:
            raise DepthImageError(f"depth encoding must be 16UC1 (mm) or 32FC1 (m), got "
                                  f"{encoding!r}")
        dtype = np.dtype(np.uint16 if encoding == "16UC1" else np.float32)
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
        h, w, step = int(msg.height), int(msg.width), int(msg.step)
        raw = msg.data
        data = (np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray, memoryview))
                else np.asarray(raw, np.uint8))
        if h < 1 or w < 1 or step < w * dtype.itemsize or data.size < h * step:
            raise DepthImageError(f"depth message of {data.size} bytes does not hold "
                                  f"{w}x{h} {encoding} (step {step})")
        rows = data[: h * step].reshape(h, step)[:, : w * dtype.itemsize]
        return rows.copy().view(dtype).reshape(h, w).astype(dtype.newbyteorder("=")), encoding

    return load


def _undecodable() -> np.ndarray:
    raise ImageDecodeError("the message cannot be read")


def _decoder(msg: Any) -> Callable[[], np.ndarray]:
    return lambda: decode_image_message(msg)


class BagWriter(Closing):
    """Writes camera images and odometry into a new rosbag2 (sqlite3 or mcap).

    Message stamps (header and record time) are the given stamps, so replaying the bag looks
    like the original drive.
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3") -> None:
        if storage not in STORAGES:
            raise ConfigError(f"storage must be one of {STORAGES}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise ConfigError(f"bag {self.path} already exists; choose a new output path")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._ts = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._writer.open()
        self._connections: dict[str, Any] = {}

    def close(self) -> None:
        self._writer.close()


    def _write(self, topic: str, msgtype: str, stamp_ns: int, msg: Any) -> None:
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self._ts)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ConfigError(f"topic '{topic}' already holds {conn.msgtype}, not {msgtype}")
        self._writer.write(conn, int(stamp_ns), self._ts.serialize_cdr(msg, msgtype))

    def _header(self, stamp_ns: int, frame_id: str) -> Any:
        types = self._ts.types
        stamp = types["builtin_interfaces/msg/Time"](
            sec=int(stamp_ns) // 1_000_000_000, nanosec=int(stamp_ns) % 1_000_000_000
        )
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def write_image(
        self, topic: str, stamp_ns: int, rgb: np.ndarray, frame_id: str, encoding: str = "rgb8"
    ) -> None:
        """Build a ``sensor_msgs/Image`` in ``encoding`` (rgb8, bgr8, rgba8, bgra8, mono8/16)."""
        data, step = encode_raw(rgb, encoding)
        msg = self._ts.types[IMAGE](
            header=self._header(stamp_ns, frame_id),
            height=rgb.shape[0],
            width=rgb.shape[1],
            encoding=encoding,
            is_bigendian=0,
            step=step,
            data=np.frombuffer(data, dtype=np.uint8),
        )
        self._write(topic, IMAGE, stamp_ns, msg)

    def write_depth(self, topic: str, stamp_ns: int, depth: np.ndarray, frame_id: str,
                    encoding: str = "16UC1") -> None:
        """Write a depth ``sensor_msgs/Image``: 16UC1 (uint16 mm) or 32FC1 (float32 m)."""
        array = np.ascontiguousarray(depth, np.uint16 if encoding == "16UC1" else np.float32)
        msg = self._ts.types[IMAGE](
            header=self._header(stamp_ns, frame_id), height=array.shape[0],
            width=array.shape[1], encoding=encoding, is_bigendian=0,
            step=array.shape[1] * array.itemsize, data=array.reshape(-1).view(np.uint8))
        self._write(topic, IMAGE, stamp_ns, msg)

    def write_camera_info(self, topic: str, stamp_ns: int, info: dict[str, Any],
                          frame_id: str) -> None:
        """Write a ``sensor_msgs/CameraInfo`` from its fields (size, distortion, K, R, P)."""
        types = self._ts.types
        roi = types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0,
                                                        width=0, do_rectify=False)
        msg = types["sensor_msgs/msg/CameraInfo"](
            header=self._header(stamp_ns, frame_id), height=int(info["height"]),
            width=int(info["width"]), distortion_model=str(info["distortion_model"]),
            d=np.asarray(info["d"], np.float64), k=np.asarray(info["k"], np.float64),
            r=np.asarray(info.get("r", np.eye(3).reshape(-1)), np.float64),
            p=np.asarray(info["p"], np.float64), binning_x=0, binning_y=0, roi=roi)
        self._write(topic, "sensor_msgs/msg/CameraInfo", stamp_ns, msg)

    def write_compressed_image(
        self,
        topic: str,
        stamp_ns: int,
        rgb: np.ndarray,
        frame_id: str,
        fmt: str = "jpeg",
        quality: int = 90,
    ) -> None:
        """Build a ``sensor_msgs/CompressedImage`` (jpeg or png)."""
        data = encode_compressed(rgb, fmt, quality)
        msg = self._ts.types[COMPRESSED_IMAGE](
            header=self._header(stamp_ns, frame_id),
            format=fmt,
            data=np.frombuffer(data, dtype=np.uint8),
        )
        self._write(topic, COMPRESSED_IMAGE, stamp_ns, msg)

    def write_odometry(
        self, topic: str, pose: Pose, frame_id: str, child_frame_id: str,
        recorded_ns: int | None = None,
    ) -> None:
        """Build a ``nav_msgs/Odometry`` at ``pose.stamp_ns`` (identity rotation when unknown).

        ``recorded_ns`` is when the bag received it (default: its stamp), as a recorder
        writes a message whose header stamp is off.
        """
        t = self._ts.types
        q = pose.orientation or (0.0, 0.0, 0.0, 1.0)
        geometry = t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](*pose.position),
            orientation=t["geometry_msgs/msg/Quaternion"](*q),
        )
        zeros3 = t["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0)
        msg = t[ODOMETRY](
            header=self._header(pose.stamp_ns, frame_id),
            child_frame_id=child_frame_id,
            pose=t["geometry_msgs/msg/PoseWithCovariance"](
                pose=geometry, covariance=np.zeros(36, np.float64)
            ),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](
                twist=t["geometry_msgs/msg/Twist"](linear=zeros3, angular=zeros3),
                covariance=np.zeros(36, np.float64),
            ),
        )
        self._write(topic, ODOMETRY, pose.stamp_ns if recorded_ns is None else recorded_ns, msg)
