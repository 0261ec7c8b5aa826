"""The map-builder node (managed): records keyframes from live image and pose topics into a map.

Subscriptions only queue messages; a worker thread pairs each image with the pose interpolated
at its stamp, applies the keyframe rules, extracts features and commits them, with the same
:class:`~selavpr_ros.mapping.builder.MapBuilder` as ``selavpr build-map``, so a drive recorded
live gives the same map as the offline build of its bag.

An image waits until a pose stamped after it arrives (then its pose is interpolated, or it is
skipped when the poses around it are further than ``pose_tolerance`` away), or until
``pose_wait`` seconds of wall time pass (skipped: no pose). Images are handled in arrival order.

Lifecycle (``autostart:=true``, the default, configures and activates at start): configure
loads the extractor and opens an existing map with its own extractor (a failure leaves the
node unconfigured and ``~/save`` says why); activate subscribes and records; deactivate
records what is queued and commits; cleanup commits, closes the map and releases the model.

Topics: ``image_topic`` (sensor_msgs/Image or CompressedImage), ``pose_topic``
(nav_msgs/Odometry, geometry_msgs/PoseStamped or PoseWithCovarianceStamped).
Service: ``~/save`` (std_srvs/Trigger) commits every image received before the call (one still
waiting for its pose is waited for, up to ``pose_wait``) and answers with the map's size.
The map is also committed when the node shuts down (Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from selavpr_ros import __version__
from selavpr_ros.errors import ConfigError, SelaVPRError
from selavpr_ros.extractors.base import Extractor
from selavpr_ros.extractors.factory import ExtractorSpec
from selavpr_ros.io.frames import Frame
from selavpr_ros.io.images import decode_image_message
from selavpr_ros.io.poses import Pose, PoseTrack
from selavpr_ros.mapping.builder import NO_POSE, BuildConfig, MapBuilder
from selavpr_ros.mapping.keyframes import KeyframeConfig
from selavpr_ros.mapping.open_map import map_exists, new_extractor, open_existing
from selavpr_ros.ros.camera_info import CameraInfoCache
from selavpr_ros.ros.conversions import stamp_to_ns
from selavpr_ros.ros.managed_node import ManagedNode
from selavpr_ros.ros.params import Param
from selavpr_ros.ros.runtime import autostart, run_node
from selavpr_ros.ros.topics import is_compressed, subscription_qos

POSE_TYPES: dict[str, type] = {
    "odometry": Odometry,
    "pose": PoseStamped,
    "pose_with_covariance": PoseWithCovarianceStamped,
}

def _ro(name: str, default: Any, description: str, low: float | None = None,
        high: float | None = None) -> Param:
    return Param(name, default, description, low, high, read_only=True)


PARAMS = [
    _ro("map_path", "", "place map directory to create, or to extend if it exists"),
    _ro("extractor", "", "feature extractor: empty = the map's (selavpr for a new map)"),
    _ro("checkpoint", "", "SelaVPR weights (.pth or .safetensors)"),
    _ro("device", "cpu", "cpu, cuda or cuda:N"),
    _ro("precision", "fp32", "fp32, fp16 or bf16"),
    _ro("batch_size", 16, "images per forward pass", 1, 1024),
    _ro("image_topic", "camera/image_raw", "camera topic (relative: in the node's namespace)"),
    _ro("image_type", "auto", "raw (sensor_msgs/Image), compressed, or auto (by topic name)"),
    _ro("pose_topic", "odom", "pose topic"),
    _ro("pose_type", "odometry", "odometry, pose (PoseStamped) or pose_with_covariance"),
    _ro("pose_tolerance", 0.1, "max seconds between an image and the poses around it", 0.0, 60.0),
    _ro("pose_wait", 1.0, "wall seconds an image waits for a pose stamped after it", 0.0, 3600.0),
    _ro("min_distance", 0.5, "metres moved for a new place (negative: off, 0: every frame)",
     -1.0, 1e6),
    _ro("min_rotation_deg", 15.0, "degrees turned for a new place (negative: off)", -1.0, 360.0),
    _ro("min_interval", -1.0, "seconds passed for a new place (negative: off)", -1.0, 1e6),
    _ro("commit_every", 100, "places per atomic commit", 1, 10**6),
    _ro("map_frame", "", "frame of the map's poses (default: the pose topic's frame)"),
    _ro("camera_info_topic", "", "CameraInfo topic stored as the map's camera model ('': "
        "camera_info beside the image topic; 'none': no camera model)"),
    _ro("depth_topic", "", "registered depth images (16UC1 mm / 32FC1 m) matched to images "
        "by stamp: 3-D points per place (''; none; needs camera info)"),
    _ro("index", "flat", "faiss index of a new map: flat, ivf, ivfsq8, ivfpq, hnsw, pqfs"),
    _ro("qos_reliability", "best_effort", "best_effort (matches any publisher) or reliable"),
    _ro("qos_depth", 10, "subscription queue depth", 1, 10000),
    _ro("autostart", True, "configure and activate at start (false: wait for a lifecycle "
     "manager)"),
]

YAML_HEADER = """Parameters of map_builder_node (README, "Building maps"); written by
selavpr_ros.ros.params.render_yaml from the node's declarations. Pass with
  --ros-args --params-file config/map_builder.yaml   (the launch file does this).
Keyframes: a new place when ANY threshold is met; negative = off, 0 = every frame."""


def _off(value: float) -> float | None:
    return None if value < 0 else float(value)


@dataclass(frozen=True)
class Settings:
    """The node's parameters, checked."""

    map_path: Path
    extractor: ExtractorSpec
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
    camera_info_topic: str = ""
    depth_topic: str = ""

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> Settings:
        from selavpr_ros.map import IndexSpec

        if not p["map_path"]:
            raise ConfigError("parameter map_path is empty: name the map to build")
        if p["pose_type"] not in POSE_TYPES:
            raise ConfigError(
                f"pose_type must be one of {tuple(POSE_TYPES)}, got '{p['pose_type']}'")
        IndexSpec(kind=p["index"])  # validates the kind
        return cls(
            map_path=Path(p["map_path"]),
            extractor=ExtractorSpec(kind=p["extractor"], checkpoint=p["checkpoint"],
                                    device=p["device"], precision=p["precision"],
                                    batch_size=p["batch_size"]),
            build=BuildConfig(
                keyframes=KeyframeConfig(_off(p["min_distance"]), _off(p["min_rotation_deg"]),
                                         _off(p["min_interval"])),
                batch_size=p["batch_size"], commit_every=p["commit_every"]),
            image_topic=p["image_topic"],
            compressed=is_compressed(p["image_topic"], p["image_type"]),
            pose_topic=p["pose_topic"],
            pose_type=p["pose_type"],
            tolerance_ns=round(p["pose_tolerance"] * 1e9),
            pose_wait=float(p["pose_wait"]),
            map_frame=p["map_frame"],
            index=p["index"],
            qos=subscription_qos(p["qos_reliability"], p["qos_depth"]),
            camera_info_topic=_camera_info_topic(p["camera_info_topic"], p["image_topic"]),
            depth_topic=p["depth_topic"],
        )


def _camera_info_topic(topic: str, image_topic: str) -> str:
    """'' = camera_info beside the image topic, 'none' = no subscription ('')."""
    if topic == "none":
        return ""
    if topic:
        return topic
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") \
        else image_topic
    return base.rsplit("/", 1)[0] + "/camera_info" if "/" in base else "camera_info"


class MapBuilderNode(ManagedNode):
    """Builds a place map from an image topic and a pose topic."""

    def __init__(self) -> None:
        super().__init__("map_builder_node", PARAMS)
        self.settings = Settings.from_params(self.values)
        self._cond = threading.Condition()
        self._images: deque[tuple[int, Any, float]] = deque()  # (stamp, msg, arrival)
        self._poses = PoseTrack()
        self._pose_frame = ""
        # pending saves: (images received at the call, answered, [success, message])
        self._saves: list[tuple[int, threading.Event, list[Any]]] = []
        self._stopping = False
        self._received = 0
        self._refused = 0  # frames the builder raised on (bad pixels, another camera, ...)
        self._error: str | None = "node is unconfigured"
        self._builder: MapBuilder | None = None
        self._extractor: Extractor | None = None
        self._worker: threading.Thread | None = None
        self._subscriptions_: list[Any] = []
        self._source = f"topic:{self.resolve_topic_name(self.settings.image_topic)}"
        self.camera_infos = CameraInfoCache()
        self._depths: dict[int, Any] = {}  # stamp -> depth message (a short window)
        self.add_trigger_service("~/save", self.save)
        autostart(self, bool(self.values["autostart"]), lambda: self._error or "")

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        s = self.settings
        try:
            if map_exists(s.map_path):
                place_map, self._extractor = open_existing(s.map_path, s.extractor)
                self._builder = MapBuilder(place_map, self._extractor, s.build)
                self.get_logger().info(f"extending map {s.map_path} ({place_map.count} places)")
            else:  # created at the first frame, once the pose frame is known
                self._extractor = new_extractor(s.extractor, fit_sample=None)
        except Exception as err:
            self._error = str(err)
            raise SelaVPRError(f"cannot build the map: {err}") from err
        self._error = None

    def activate(self) -> None:
        s = self.settings
        image_type = CompressedImage if s.compressed else Image
        self._subscriptions_ = [
            self.create_subscription(image_type, s.image_topic, self._on_image, s.qos),
            self.create_subscription(POSE_TYPES[s.pose_type], s.pose_topic, self._on_pose,
                                     s.qos)]
        if s.camera_info_topic:
            self._subscriptions_.append(self.create_subscription(
                CameraInfo, s.camera_info_topic, self._on_camera_info, s.qos))
        if s.depth_topic:
            self._subscriptions_.append(self.create_subscription(
                Image, s.depth_topic, self._on_depth, s.qos))
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="map_builder", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"selavpr_ros {__version__} map_builder_node started: map '{s.map_path}', images "
            f"{self.resolve_topic_name(s.image_topic)} ({image_type.__name__}), poses "
            f"{self.resolve_topic_name(s.pose_topic)} ({POSE_TYPES[s.pose_type].__name__})")

    def deactivate(self) -> None:
        """Record what is queued, commit, and stop listening."""
        for sub in self._subscriptions_:
            self.destroy_subscription(sub)
        self._subscriptions_ = []
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    def release(self, final: bool) -> None:
        """Commit, log the summary, close the map and drop the model."""
        builder, self._builder, self._extractor = self._builder, None, None
        self._error = "node is unconfigured"
        if builder is None:
            return
        try:
            for line in builder.finish().lines():
                self.get_logger().info(line)
        except (SelaVPRError, OSError, ValueError) as err:
            self.get_logger().error(f"final commit failed: {err}")
        finally:
            builder.map.close()
        if self.settings.extractor.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ callbacks (cheap)
    def _on_image(self, msg: Any) -> None:
        stamp = stamp_to_ns(msg.header.stamp) or self.get_clock().now().nanoseconds
        with self._cond:
            self._images.append((stamp, msg, time.monotonic()))
            self._received += 1
            self._cond.notify()
        self.get_logger().debug(f"image {stamp} queued")

    def _on_camera_info(self, msg: Any) -> None:
        self.camera_infos.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_depth(self, msg: Any) -> None:
        with self._cond:
            self._depths[stamp_to_ns(msg.header.stamp)] = msg
            while len(self._depths) > 64:
                del self._depths[min(self._depths)]
            self._cond.notify()

    def _on_pose(self, msg: Any) -> None:
        p = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
        try:
            pose = Pose(stamp_to_ns(msg.header.stamp), (p.position.x, p.position.y, p.position.z),
                        (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w))
        except ValueError as err:
            self.get_logger().warning(f"ignoring pose: {err}", throttle_duration_sec=5.0)
            return
        with self._cond:
            self._poses.add(pose)
            self._pose_frame = self._pose_frame or msg.header.frame_id
            self._cond.notify()

    def save(self) -> tuple[bool, str]:
        """Commit every image received before the call (by the worker, once each is decided)."""
        done = threading.Event()
        result: list[Any] = []
        if self._worker is None:  # not active: commit here
            self._answer_saves([(done, result)])
            return result[0], result[1]
        with self._cond:
            self._saves.append((self._received, done, result))
            self._cond.notify()
        if not done.wait(timeout=600.0):
            return False, "timed out waiting for the commit"
        return result[0], result[1]

    # ------------------------------------------------------------------ worker
    def _ensure_builder(self) -> MapBuilder | None:
        """Return the builder; a new map is created at the first frame (pose frame known)."""
        if self._builder is None and self._extractor is not None:
            from selavpr_ros.map import IndexSpec, PlaceMap
            from selavpr_ros.map.index import IndexKind

            s = self.settings
            with self._cond:
                frame = s.map_frame or self._pose_frame or "map"
            kind = cast("IndexKind", s.index)  # checked in Settings.from_params
            place_map = PlaceMap.create(s.map_path, self._extractor,
                                        index=IndexSpec(kind=kind), map_frame=frame)
            self.get_logger().info(f"created map {s.map_path} in frame '{frame}'")
            if frame == "odom":
                self.get_logger().warning(
                    "building the map in 'odom': odometry drifts and restarts at zero, so its "
                    "poses do not hold in a later session; use poses in 'map' (SLAM or "
                    "localisation) for re-localisation")
            self._builder = MapBuilder(place_map, self._extractor, s.build)
        return self._builder

    def _next_frame(self, force: bool) -> Frame | None:
        """Return the oldest image as a frame once its pose can be decided (call with the lock)."""
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
                     frame_id=str(msg.header.frame_id), depth=self._depth_of(stamp))

    def _take_camera(self, stamp: int) -> None:
        """Record the first valid camera info as the map's camera model (once)."""
        b = self._builder
        if b is None or b.camera is not None or not self.settings.camera_info_topic:
            return
        camera, why = self.camera_infos.lookup(stamp)
        if camera is None:
            if why != "no camera info received" or self.settings.depth_topic:
                self.get_logger().warning(f"no camera model yet: {why}",
                                          throttle_duration_sec=10.0)
            return
        b.map.set_camera(camera)
        b.camera = camera
        self.get_logger().info(f"map camera model: {camera.width}x{camera.height}, "
                               f"fx {camera.fx:g}")

    def _depth_of(self, stamp: int) -> Any:
        """Return the depth loader of an image stamp (None without a depth topic).

        The depth message is looked up when the builder reads it (a keyframe), so a depth
        image that arrives after its colour image is still found.
        """
        if not self.settings.depth_topic:
            return None
        from selavpr_ros.geometry.depth import DepthImageError
        from selavpr_ros.io.bags import depth_decoder

        def load() -> Any:
            tol = self.settings.tolerance_ns
            with self._cond:
                near = [s for s in self._depths if abs(s - stamp) <= tol]
                msg = self._depths[min(near, key=lambda s: abs(s - stamp))] if near else None
            if msg is None:
                raise DepthImageError(f"no depth image within {tol / 1e9:g} s of {stamp}")
            return depth_decoder(msg)()

        return load

    def _status(self, committed: int) -> str:
        b = self._builder
        if b is None:
            return f"not recording: {self._error}"
        skipped = ", ".join(f"{k} {v}" for k, v in b.summary.skipped.items() if v) or "none"
        with self._cond:
            received, waiting = self._received, len(self._images)
        return (f"map {self.settings.map_path}: committed {committed} places, {b.map.count} in "
                f"total; images received {received}, waiting {waiting}, skipped {skipped}, "
                f"refused {self._refused}")

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
                result = [True, self._status(self._builder.commit())]
            except (SelaVPRError, OSError, ValueError) as err:
                result = [False, f"commit failed: {err}"]
                self.get_logger().error(result[1])
        for done, holder in saves:
            holder.extend(result)
            done.set()

    def _take(self) -> tuple[Frame | None, list[tuple[threading.Event, list[Any]]], bool]:
        """Return the next ready frame, else the saves to answer; and whether to stop.

        A save is answered once every image received before it has left the queue (added,
        skipped or refused) and no ready frame is left.
        """
        with self._cond:
            frame = self._next_frame(force=self._stopping)
            saves: list[tuple[threading.Event, list[Any]]] = []
            if frame is None:
                decided = self._received - len(self._images)
                saves = [(done, result) for mark, done, result in self._saves if mark <= decided]
                self._saves = [s for s in self._saves if s[0] > decided]
            return frame, saves, self._stopping

    def _work(self) -> None:
        while True:
            frame, saves, stopping = self._take()
            if frame is not None:
                self._add(frame)
                continue
            self._answer_saves(saves)
            if stopping:
                self._commit_quietly()  # before going inactive
                return
            if not saves:
                self._idle()

    def _commit_quietly(self) -> None:
        if self._builder is None:
            return
        try:
            self._builder.commit()
        except (SelaVPRError, OSError, ValueError) as err:
            self.get_logger().error(f"commit failed: {err}")

    def _idle(self) -> None:
        """Extract what is queued in the builder, then wait for work."""
        if self._builder is not None and self._builder.pending:
            try:
                self._builder.extract_pending()
            except (SelaVPRError, ValueError, RuntimeError) as err:
                self.get_logger().error(f"feature extraction failed: {err}")
        with self._cond:
            if not self._saves and not self._stopping and not self._images:
                self._cond.wait(timeout=0.1)
            elif self._images and not self._stopping:
                _, _, arrival = self._images[0]
                wait = arrival + self.settings.pose_wait - time.monotonic()
                if wait > 0:
                    self._cond.wait(timeout=min(wait, 0.1))

    def _add(self, frame: Frame) -> None:
        try:
            builder = self._ensure_builder()
            if builder is None:
                return
            self._take_camera(frame.stamp_ns)
            reason = builder.add(frame)
        except (SelaVPRError, OSError, ValueError, RuntimeError) as err:
            self._refused += 1  # a stream of such frames logs once per 5 s, with the count
            self.get_logger().error(f"cannot add frame {frame.stamp_ns}: {err} "
                                    f"({self._refused} frames refused so far)",
                                    throttle_duration_sec=5.0)
            return
        if reason == NO_POSE:
            self.get_logger().warning(
                f"no pose within {self.settings.tolerance_ns / 1e9:.3f} s of image "
                f"{frame.stamp_ns}; skipped", throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``map_builder_node`` executable."""
    return run_node(MapBuilderNode, args, num_threads=2)  # ~/save waits for pose callbacks


if __name__ == "__main__":
    sys.exit(main())
