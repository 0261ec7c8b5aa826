"""The map-builder node: records keyframes from live image and pose topics into a place map.

Subscriptions only queue messages; a worker thread pairs each image with the pose interpolated
at its stamp, applies the keyframe rules, extracts features and commits them, with the same
:class:`~selavpr_ros.mapping.builder.MapBuilder` as ``selavpr build-map``, so a drive recorded
live gives the same map as the offline build of its bag.

An image waits until a pose stamped after it arrives (then its pose is interpolated, or it is
skipped when the poses around it are further than ``pose_tolerance`` away), or until
``pose_wait`` seconds of wall time pass (skipped: no pose). Images are handled in arrival order.

Topics: ``image_topic`` (sensor_msgs/Image or CompressedImage), ``pose_topic``
(nav_msgs/Odometry, geometry_msgs/PoseStamped or PoseWithCovarianceStamped).
Service: ``~/save`` (std_srvs/Trigger) commits everything selected so far and answers with the
map's size. The map is also committed when the node shuts down (Ctrl-C, SIGTERM).

The extractor is loaded in the worker after start-up (loading ViT-L takes seconds; frames queue
meanwhile). If it cannot be loaded (no checkpoint, a bad file), the node logs the error once,
keeps running without recording, and ``~/save`` reports the error.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nav_msgs.msg import Odometry
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import Trigger

from selavpr_ros import __version__
from selavpr_ros.errors import ConfigError, SelaVPRError
from selavpr_ros.extractor import Extractor
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.images import decode_image_message
from selavpr_ros.io.poses import Pose, PoseTrack
from selavpr_ros.mapping.builder import NO_POSE, BuildConfig, MapBuilder
from selavpr_ros.mapping.keyframes import KeyframeConfig
from selavpr_ros.ros.runtime import run_node

POSE_TYPES: dict[str, type] = {
    "odometry": Odometry,
    "pose": PoseStamped,
    "pose_with_covariance": PoseWithCovarianceStamped,
}
IMAGE_TYPES = ("auto", "raw", "compressed")
RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
               "reliable": ReliabilityPolicy.RELIABLE}

# name, default, description
PARAMETERS: list[tuple[str, Any, str]] = [
    ("map_path", "", "place map directory to create, or to extend if it exists"),
    ("extractor", "selavpr", "feature extractor"),
    ("checkpoint", "", "SelaVPR weights (.pth or .safetensors)"),
    ("device", "cpu", "cpu, cuda or cuda:N"),
    ("precision", "fp32", "fp32, fp16 or bf16"),
    ("batch_size", 16, "images per forward pass"),
    ("image_topic", "/camera/image_raw", "camera topic"),
    ("image_type", "auto", "raw (sensor_msgs/Image), compressed, or auto (by topic name)"),
    ("pose_topic", "/odom", "pose topic"),
    ("pose_type", "odometry", "odometry, pose (PoseStamped) or pose_with_covariance"),
    ("pose_tolerance", 0.1, "max seconds between an image and the poses around it"),
    ("pose_wait", 1.0, "wall seconds an image waits for a pose stamped after it"),
    ("min_distance", 0.5, "metres moved for a new place (negative: off, 0: every frame)"),
    ("min_rotation_deg", 15.0, "degrees turned for a new place (negative: off)"),
    ("min_interval", -1.0, "seconds passed for a new place (negative: off)"),
    ("commit_every", 100, "places per atomic commit"),
    ("map_frame", "", "frame of the map's poses (default: the pose topic's frame)"),
    ("index", "flat", "faiss index of a new map: flat, ivf, ivfpq, hnsw"),
    ("qos_reliability", "best_effort", "best_effort (matches any publisher) or reliable"),
    ("qos_depth", 10, "subscription queue depth"),
]


def _off(value: float) -> float | None:
    return None if value < 0 else float(value)


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


@dataclass(frozen=True)
class Settings:
    """The node's parameters, checked."""

    map_path: Path
    extractor: dict[str, Any]
    build: BuildConfig
    image_topic: str
    compressed: bool
    pose_topic: str
    pose_type: str
    tolerance_ns: int
    pose_wait: float
    map_frame: str
    index: str
    qos: QoSProfile

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Settings:
        if not p["map_path"]:
            raise ConfigError("parameter map_path is empty: name the map to build")
        if p["image_type"] not in IMAGE_TYPES:
            raise ConfigError(f"image_type must be one of {IMAGE_TYPES}, got '{p['image_type']}'")
        if p["pose_type"] not in POSE_TYPES:
            raise ConfigError(
                f"pose_type must be one of {tuple(POSE_TYPES)}, got '{p['pose_type']}'")
        if p["qos_reliability"] not in RELIABILITY:
            raise ConfigError(f"qos_reliability must be one of {tuple(RELIABILITY)}, got "
                              f"'{p['qos_reliability']}'")
        if p["qos_depth"] < 1:
            raise ConfigError(f"qos_depth must be at least 1, got {p['qos_depth']}")
        if p["pose_tolerance"] < 0 or p["pose_wait"] < 0:
            raise ConfigError("pose_tolerance and pose_wait must be >= 0")
        from selavpr_ros.map import IndexSpec

        IndexSpec(kind=p["index"])  # validates the kind
        compressed = (p["image_type"] == "compressed" or (
            p["image_type"] == "auto" and p["image_topic"].rstrip("/").endswith("compressed")))
        # The extractor spec is checked when the extractor loads (see the module docstring).
        extractor = {"kind": p["extractor"], "checkpoint": p["checkpoint"],
                     "device": p["device"], "precision": p["precision"],
                     "batch_size": p["batch_size"]}
        return cls(
            map_path=Path(p["map_path"]),
            extractor=extractor,
            build=BuildConfig(
                keyframes=KeyframeConfig(_off(p["min_distance"]), _off(p["min_rotation_deg"]),
                                         _off(p["min_interval"])),
                batch_size=max(1, p["batch_size"]),
                commit_every=p["commit_every"],
            ),
            image_topic=p["image_topic"],
            compressed=compressed,
            pose_topic=p["pose_topic"],
            pose_type=p["pose_type"],
            tolerance_ns=round(p["pose_tolerance"] * 1e9),
            pose_wait=float(p["pose_wait"]),
            map_frame=p["map_frame"],
            index=p["index"],
            qos=QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p["qos_depth"],
                           reliability=RELIABILITY[p["qos_reliability"]]),
        )


class MapBuilderNode(Node):
    """Builds a place map from an image topic and a pose topic."""

    def __init__(self) -> None:
        super().__init__("map_builder_node")
        params: dict[str, Any] = {}
        for name, default, description in PARAMETERS:
            self.declare_parameter(name, default, ParameterDescriptor(
                description=description, read_only=True))
            params[name] = self.get_parameter(name).value
        self.settings = Settings.from_params(params)
        s = self.settings
        self._cond = threading.Condition()
        self._images: deque[tuple[int, Any, float]] = deque()  # (stamp, msg, arrival)
        self._poses = PoseTrack()
        self._pose_frame = ""
        self._saves: list[tuple[threading.Event, list[Any]]] = []
        self._stopping = False
        self._received = 0
        self._error: str | None = None
        self._builder: MapBuilder | None = None
        self._extractor: Extractor | None = None
        self._source = f"topic:{self.resolve_topic_name(s.image_topic)}"

        image_type = CompressedImage if s.compressed else Image
        self.create_subscription(image_type, s.image_topic, self._on_image, s.qos)
        self.create_subscription(POSE_TYPES[s.pose_type], s.pose_topic, self._on_pose, s.qos)
        self.create_service(Trigger, "~/save", self._on_save,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self._worker = threading.Thread(target=self._work, name="map_builder", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"selavpr_ros {__version__} map_builder_node started: map '{s.map_path}', images "
            f"{self.resolve_topic_name(s.image_topic)} ({image_type.__name__}), poses "
            f"{self.resolve_topic_name(s.pose_topic)} ({POSE_TYPES[s.pose_type].__name__})")

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg: Any) -> None:
        stamp = stamp_ns(msg) or self.get_clock().now().nanoseconds
        with self._cond:
            self._images.append((stamp, msg, time.monotonic()))
            self._received += 1
            self._cond.notify()
        self.get_logger().debug(f"image {stamp} queued")

    def _on_pose(self, msg: Any) -> None:
        p = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
        try:
            pose = Pose(stamp_ns(msg), (p.position.x, p.position.y, p.position.z),
                        (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w))
        except ValueError as err:
            self.get_logger().warning(f"ignoring pose: {err}", throttle_duration_sec=5.0)
            return
        with self._cond:
            self._poses.add(pose)
            self._pose_frame = self._pose_frame or msg.header.frame_id
            self._cond.notify()

    def _on_save(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        done, result = threading.Event(), []
        with self._cond:
            self._saves.append((done, result))
            self._cond.notify()
        if not done.wait(timeout=600.0):
            response.success, response.message = False, "timed out waiting for the commit"
        else:
            response.success, response.message = result
        return response

    # ------------------------------------------------------------------ worker
    def _load_extractor(self) -> None:
        """Load the extractor (in the worker: it takes seconds) and open an existing map."""
        from selavpr_ros.map import PlaceMap

        from selavpr_ros.map import check_extractor

        s = self.settings
        spec = ExtractorSpec(**s.extractor)
        if (s.map_path / "manifest.json").is_file():
            place_map = PlaceMap.open(s.map_path, writable=True)
            try:
                extractor = create_extractor(spec, place_map)  # with the map's learned state
                check_extractor(place_map.extractor_info, extractor.info, s.map_path)
            except BaseException:
                place_map.close()
                raise
            self.get_logger().info(f"extending map {s.map_path} ({place_map.count} places)")
            self._builder = MapBuilder(place_map, extractor, s.build)
            self._extractor = extractor
            return
        extractor = create_extractor(spec)
        if extractor.needs_fit:
            raise ConfigError(
                f"extractor '{spec.kind}' learns its state from the route's images: build the "
                "map offline (selavpr build-map), then extend it with this node")
        self._extractor = extractor

    def _ensure_builder(self) -> MapBuilder | None:
        """The builder; a new map is created at the first frame, once the pose frame is known."""
        if self._builder is None and self._extractor is not None:
            from selavpr_ros.map import IndexSpec, PlaceMap

            s = self.settings
            with self._cond:
                frame = s.map_frame or self._pose_frame or "map"
            place_map = PlaceMap.create(s.map_path, self._extractor,
                                        index=IndexSpec(kind=s.index), map_frame=frame)
            self.get_logger().info(f"created map {s.map_path} in frame '{frame}'")
            self._builder = MapBuilder(place_map, self._extractor, s.build)
        return self._builder

    def _next_frame(self, force: bool) -> Frame | None:
        """The oldest image as a frame once its pose can be decided (call with the lock)."""
        if not self._images:
            return None
        stamp, msg, arrival = self._images[0]
        last = self._poses.last_stamp
        waited = time.monotonic() - arrival >= self.settings.pose_wait
        if not (force or waited or (last is not None and last >= stamp)):
            return None
        self._images.popleft()
        pose = self._poses.at(stamp, self.settings.tolerance_ns)
        self._poses.drop_before(stamp - self.settings.tolerance_ns)
        return Frame(stamp_ns=stamp, load=lambda: decode_image_message(msg), pose=pose,
                     source=self._source, source_ref=str(stamp),
                     frame_id=str(msg.header.frame_id))

    def _status(self, committed: int) -> str:
        b = self._builder
        if b is None:
            return f"not recording: {self._error}"
        skipped = ", ".join(f"{k} {v}" for k, v in b.summary.skipped.items() if v) or "none"
        with self._cond:
            received, waiting = self._received, len(self._images)
        return (f"map {self.settings.map_path}: committed {committed} places, {b.map.count} in "
                f"total; images received {received}, waiting {waiting}, skipped {skipped}")

    def _answer_saves(self, saves: list[tuple[threading.Event, list[Any]]]) -> None:
        if not saves:
            return
        if self._error is None and self._extractor is not None:
            try:
                self._ensure_builder()
            except (SelaVPRError, OSError) as err:
                self._error = str(err)
        if self._builder is None:
            result = [False, self._status(0)]
        else:
            try:
                committed = self._builder.commit()
                result = [True, self._status(committed)]
            except (SelaVPRError, OSError, ValueError) as err:
                result = [False, f"commit failed: {err}"]
                self.get_logger().error(result[1])
        for done, holder in saves:
            holder.extend(result)
            done.set()

    def _work(self) -> None:
        try:
            self._load_extractor()
        except (SelaVPRError, OSError) as err:
            self._error = str(err)
            self.get_logger().error(f"cannot build the map, frames are not recorded: {err}")
        while True:
            with self._cond:
                frame = self._next_frame(force=self._stopping)
                saves: list[tuple[threading.Event, list[Any]]] = []
                if frame is None:  # answer saves once every ready frame is in the builder
                    saves, self._saves = self._saves, []
                stopping = self._stopping
                if frame is None and not saves and not stopping:
                    # idle: extract what is queued before sleeping
                    idle = True
                else:
                    idle = False
            if frame is not None:
                if self._extractor is not None:
                    self._add(frame)
                continue
            self._answer_saves(saves)
            if stopping:
                break
            if idle:
                if self._builder is not None and self._builder.pending:
                    try:
                        self._builder.extract_pending()
                    except (SelaVPRError, ValueError, RuntimeError) as err:
                        self.get_logger().error(f"feature extraction failed: {err}")
                with self._cond:
                    if not self._saves and not self._stopping and not self._images:
                        self._cond.wait(timeout=0.1)
                    elif self._images and self._next_ready_in() > 0:
                        self._cond.wait(timeout=min(self._next_ready_in(), 0.1))
        self._finish()

    def _next_ready_in(self) -> float:
        _, _, arrival = self._images[0]
        return max(0.0, arrival + self.settings.pose_wait - time.monotonic())

    def _add(self, frame: Frame) -> None:
        try:
            builder = self._ensure_builder()
            assert builder is not None
            reason = builder.add(frame)
        except (SelaVPRError, OSError, ValueError, RuntimeError) as err:
            self.get_logger().error(f"cannot add frame {frame.stamp_ns}: {err}")
            return
        if reason == NO_POSE:
            self.get_logger().warning(
                f"no pose within {self.settings.tolerance_ns / 1e9:.3f} s of image "
                f"{frame.stamp_ns}; skipped", throttle_duration_sec=5.0)

    def _finish(self) -> None:
        if self._builder is None:
            return
        try:
            summary = self._builder.finish()
            for line in summary.lines():
                self.get_logger().info(line)
        except (SelaVPRError, OSError, ValueError) as err:
            self.get_logger().error(f"final commit failed: {err}")
        finally:
            self._builder.map.close()

    def destroy_node(self) -> None:
        """Commit what is pending before the node goes away (also on Ctrl-C and SIGTERM)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._worker.join()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``map_builder_node`` executable."""
    return run_node(MapBuilderNode, args)


if __name__ == "__main__":
    sys.exit(main())
