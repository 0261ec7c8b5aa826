"""The localizer node (managed): camera frames in, recognised places and poses out.

The node only converts messages, holds parameters and schedules work; answering a frame is
:class:`selavpr_ros.localizer.Localizer`'s job, exactly as offline. The image callback drops
each message into a one-frame slot; a worker thread always processes the newest frame, so
latency never grows with a backlog (replaced frames are counted as dropped).

Lifecycle (``ros2 lifecycle set``, or a lifecycle manager; ``autostart:=true``, the default,
configures and activates at start): configure opens the map and loads the model (a failure
leaves the node unconfigured and says why), activate subscribes and processes, deactivate
stops, cleanup releases the map and the model's memory.

Topics (relative names resolve in the node's namespace; remap as usual):
    subscribes  ``image_topic`` (parameter): sensor_msgs/Image or CompressedImage
                ``camera_info_topic`` (sensor_msgs/CameraInfo), matched to images by stamp
    publishes   ``place_recognition`` (selavpr_msgs/PlaceRecognition), one per processed frame,
                with the query pose (pnp / two_view / keyframe, see pose_source)
                ``pose`` (geometry_msgs/PoseWithCovarianceStamped): consistent estimates with
                an orientation (``publish_pose``, ``relocalization_mode``); remap to
                /initialpose for Nav2
                ``/tf`` map -> odom (``publish_tf``), held between estimates, re-published
                at ``tf_rate`` and post-dated by ``transform_tolerance``
                ``loop_closure`` (std_msgs/Float64MultiArray [query s, place s])
                (``publish_loop_closure``)
                ``candidate_markers`` (visualization_msgs/MarkerArray) (``publish_markers``)
                (``pose``, ``loop_closure`` and ``candidate_markers`` are advertised only when
                enabled)
                ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), once per second
Services:   ``~/reload_map`` (std_srvs/Trigger): reopen ``map_path`` with the current
            parameters and swap it in once no query uses the old one; a failed reload, whatever
            the cause, keeps the current map and says why.
            ``~/relocalize`` (std_srvs/Trigger): publish the next consistent estimate once
            (``relocalization_mode`` on_request).
TF (tf2_ros, from apt on a robot) is needed only with ``base_frame`` or ``publish_tf``. Callbacks
run on one executor thread and only hand work to the worker; TF lookups happen in the worker at
the image stamp (waiting briefly for late odometry), never in a callback.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import threading
import time
from typing import Any

from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import MarkerArray

from selavpr_msgs.msg import PlaceRecognition
from selavpr_ros import __version__
from selavpr_ros.errors import ConfigError, ImageDecodeError
from selavpr_ros.extractors.factory import ExtractorSpec, extractor_for_map
from selavpr_ros.geometry import PoseEstimate
from selavpr_ros.geometry.pose import refused
from selavpr_ros.geometry.transforms import matrix_to_pose
from selavpr_ros.io.images import decode_image_message
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.localizer.config import config_from_values, from_values, settings
from selavpr_ros.localizer.pose import robot_pose
from selavpr_ros.localizer.relocalization import (
    ConsistencyGate,
    RelocalizationConfig,
    jump_too_large,
    map_to_odom,
)
from selavpr_ros.map import PlaceMap
from selavpr_ros.ros import diagnostics as diag
from selavpr_ros.ros.camera_info import CameraInfoCache
from selavpr_ros.ros.conversions import (
    candidate_markers,
    has_publishable_pose,
    loop_closure_msg,
    pose_msg,
    result_to_msg,
    stamp_to_ns,
    transform_matrix,
    transform_msg,
)
from selavpr_ros.ros.latest_frame import LatestFrameSlot
from selavpr_ros.ros.managed_node import ManagedNode
from selavpr_ros.ros.params import Param, from_settings, on_live_update
from selavpr_ros.ros.runtime import autostart, describe_error, run_node
from selavpr_ros.ros.stats import EventWindow, RollingStats
from selavpr_ros.ros.topics import image_message_type, subscription_qos

PARAMS = [
    Param("map_path", "", "place map directory (required); a change takes effect at "
          "~/reload_map or the next configure"),
    Param("extractor", "", "feature extractor: empty = the one recorded in the map; selavpr "
          "or classical insist on it (refused when the map records another)", read_only=True),
    Param("checkpoint", "", "SelaVPR weights: official .pth or converted .safetensors",
          read_only=True),
    Param("device", "cpu", "cpu, cuda or cuda:N (extraction and re-ranking)", read_only=True),
    Param("precision", "fp32", "fp32; fp16 (CUDA) or bf16 (CUDA, or a CPU with bf16 "
          "instructions) for extraction and re-ranking", read_only=True),
    *from_settings(settings(node_only=True)),
    Param("image_topic", "camera/image_raw", "camera topic (relative: in the node's namespace)",
          read_only=True),
    Param("image_type", "auto", "raw, compressed, or auto (compressed if the topic name ends "
          "in /compressed)", read_only=True),
    Param("qos_reliability", "best_effort", "image subscription QoS: best_effort or reliable",
          read_only=True),
    Param("qos_depth", 1, "image subscription queue depth", 1, 1000, read_only=True),
    Param("max_rate", 0.0, "process at most this many frames per second (0: no limit)",
          0.0, 1000.0),
    Param("map_frame", "", "frame of published poses (empty: the map's own frame)"),
    Param("max_candidates", 10, "candidates listed in each PlaceRecognition", 0, 10000),
    Param("publish_pose", True, "publish PoseWithCovarianceStamped of consistent estimates"),
    *from_settings(settings(config_class=RelocalizationConfig)),
    Param("publish_loop_closure", False, "publish [query time, place time] for accepted matches"),
    Param("publish_markers", False, "publish candidate markers for RViz"),
    Param("stale_after_s", 3.0, "diagnostics: input is STALE after this long without a frame "
          "(s)", 0.1, 3600.0),
    Param("expected_rate", 0.0, "diagnostics: WARN when processing falls below half this rate "
          "(Hz; 0: no check)", 0.0, 1000.0),
    Param("error_window_s", 30.0, "diagnostics: failed frames count for this long (s)",
          1.0, 3600.0),
    Param("autostart", True, "configure and activate at start (false: wait for a lifecycle "
          "manager)", read_only=True),
]

# outputs advertised only while enabled (at configure, or when a live parameter enables them):
# name -> (type, topic, depth), and the parameter that enables it
OPTIONAL_OUTPUTS: dict[str, tuple[type, str, int]] = {
    "pose": (PoseWithCovarianceStamped, "pose", 10),
    "loop": (Float64MultiArray, "loop_closure", 10),
    "markers": (MarkerArray, "candidate_markers", 1),
}
OUTPUT_SWITCHES = {"pose": "publish_pose", "loop": "publish_loop_closure",
                   "markers": "publish_markers"}
# the longest a frame waits for TF at its stamp (odometry published after the image)
TF_WAIT_S = 0.3

YAML_HEADER = """Parameters of localizer_node (README, "The localizer node"); written by
selavpr_ros.ros.params.render_yaml from the node's declarations. Pass with
  --ros-args --params-file config/localizer.yaml   (the launch file does this)."""


def localizer_config(values: dict[str, Any]) -> LocalizerConfig:
    """Return the core's LocalizerConfig from the node's parameter values (checked by the core)."""
    return config_from_values(values, device=str(values["device"]),
                              precision=str(values["precision"]))


def extractor_spec(values: dict[str, Any]) -> ExtractorSpec:
    return ExtractorSpec(kind=values["extractor"], checkpoint=values["checkpoint"],
                         device=values["device"], precision=values["precision"], batch_size=1)


def open_localizer(map_path: str, spec: ExtractorSpec, config: LocalizerConfig,
                   reuse: Localizer | None = None) -> Localizer:
    """Open the map and build its localizer; reuses ``reuse``'s extractor when it matches."""
    if not map_path:
        raise ConfigError("parameter map_path is required (a place map directory)")
    place_map = PlaceMap.open(map_path)
    try:
        if reuse is not None and reuse.extractor.info == place_map.extractor_info:
            extractor = reuse.extractor
        else:
            extractor = extractor_for_map(spec, place_map)
        return Localizer(place_map, extractor, config)
    except BaseException:
        place_map.close()
        raise


def map_summary(localizer: Localizer) -> dict[str, Any]:
    """Return what diagnostics report about the map, read once (the map may close later)."""
    m = localizer.place_map
    return {"map_path": str(m.path), "map_id": m.map_id, "map_places": len(m),
            "extractor": m.extractor_info.name}


class LocalizerNode(ManagedNode):
    """Subscribes to a camera topic and publishes ``selavpr_msgs/PlaceRecognition``."""

    def __init__(self) -> None:
        super().__init__("localizer_node", PARAMS)
        self.config = localizer_config(self.values)
        self.reloc = from_values(RelocalizationConfig, self.values)
        self.gate = ConsistencyGate(self.reloc)
        self.camera_infos = CameraInfoCache()
        self._camera_info_sub: Any = None
        self._tf: dict[str, Any] = {}  # buffer, listener, broadcaster when TF is used
        self.map_to_odom: Any = None  # held 4x4 map <- odom (publish_tf)
        self._pose_notes: dict[str, float] = {}  # kind -> when last logged
        self.spec = extractor_spec(self.values)
        self.image_msg_type = image_message_type(self.values["image_topic"],
                                                 self.values["image_type"])
        self.qos = subscription_qos(self.values["qos_reliability"], self.values["qos_depth"])
        on_live_update(self, self.values, self._check_update, self._apply_update)

        # Held while a query runs and while the map is swapped or released: a map is closed
        # only once no query uses it.
        self._query_lock = threading.Lock()
        self.localizer: Localizer | None = None
        self.map_info: dict[str, Any] = {}
        self._outputs: dict[str, Any] = {}
        self._subscription: Any = None
        self._worker: threading.Thread | None = None
        self.slot = LatestFrameSlot()
        self.slot.close()
        self.stats = RollingStats()
        self.failures = EventWindow(self.values["error_window_s"])
        self.processed = EventWindow(self.values["error_window_s"])
        self.received = self.dropped = self.bad_frames = self.errors = self.reload_failures = 0
        self._last_frame: float | None = None
        self._last_bad_log = 0.0

        self.add_trigger_service("~/reload_map", self._reload_map)
        self.add_trigger_service("~/relocalize", self._relocalize)
        self.publish_diagnostics(self.diagnostic_statuses)
        autostart(self, bool(self.values["autostart"]), lambda: self.failure_reason)

    # --- parameters ---------------------------------------------------------------------
    def _check_update(self, proposed: dict[str, Any]) -> None:
        localizer_config(proposed)  # raises ConfigError naming what is wrong
        from_values(RelocalizationConfig, proposed)

    def _apply_update(self, values: dict[str, Any]) -> None:
        self.config = localizer_config(values)
        self.reloc = from_values(RelocalizationConfig, values)
        self.gate.configure(self.reloc)
        self.failures.horizon_s = self.processed.horizon_s = float(values["error_window_s"])

    # --- lifecycle ----------------------------------------------------------------------
    def configure(self) -> None:
        path = str(self.values["map_path"])
        try:
            localizer = open_localizer(path, self.spec, self.config)
        except Exception as err:
            raise ConfigError(f"cannot open map '{path}': {describe_error(err)}") from err
        try:
            self._start_tf()
        except ImportError as err:
            localizer.place_map.close()
            raise ConfigError(f"base_frame / publish_tf need tf2_ros (apt: "
                              f"ros-jazzy-tf2-ros): {err}") from err
        map_frame = self.values["map_frame"] or localizer.place_map.map_frame
        if self.reloc.publish_tf and map_frame == self.reloc.odom_frame:
            localizer.place_map.close()
            raise ConfigError(f"publish_tf: the map's frame '{map_frame}' is odom_frame, so "
                              "map -> odom would be a self-transform; set map_frame (e.g. map)")
        with self._query_lock:
            self.localizer, self.map_info = localizer, map_summary(localizer)
        self._outputs = {
            "result": self.create_publisher(PlaceRecognition, "place_recognition", 10)}
        for name, parameter in OUTPUT_SWITCHES.items():  # enabled ones now: subscribers match
            if self.values[parameter]:                     # before the first message
                self._output(name)
        m = self.map_info
        self.get_logger().info(
            f"configured: map {m['map_path']} ({m['map_places']} places, {m['extractor']}), "
            f"device {self.config.device}; {localizer.describe_rerank()}")

    def activate(self) -> None:
        self.slot = LatestFrameSlot()
        self._subscription = self.create_subscription(
            self.image_msg_type, self.values["image_topic"], self._on_frame, self.qos,
            callback_group=MutuallyExclusiveCallbackGroup())
        info_topic = self.camera_info_topic()
        if info_topic:
            self._camera_info_sub = self.create_subscription(  # the camera driver's QoS
                CameraInfo, info_topic, self._on_camera_info, self.qos,
                callback_group=MutuallyExclusiveCallbackGroup())
        self._worker = threading.Thread(target=self._work, name="localizer_worker", daemon=True)
        self._worker.start()
        topic = self.resolve_topic_name(self.values["image_topic"])
        self.get_logger().info(
            f"selavpr_ros {__version__} localizer_node started: map {self.map_info['map_path']} "
            f"({self.map_info['map_places']} places, {self.map_info['extractor']}), camera "
            f"{topic} ({self.image_msg_type.__name__}), device {self.config.device}")

    def deactivate(self) -> None:
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._camera_info_sub is not None:
            self.destroy_subscription(self._camera_info_sub)
            self._camera_info_sub = None
        self.slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
            self._worker = None
            self.get_logger().info("deactivated: not processing frames")

    def release(self, final: bool) -> None:
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        with self._query_lock:
            localizer, self.localizer = self.localizer, None
        if localizer is None:
            return
        localizer.place_map.close()
        device = localizer.config.device
        del localizer
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        if not final:
            self.get_logger().info("cleaned up: map and model released")

    # --- worker -------------------------------------------------------------------------
    def _on_camera_info(self, msg: Any) -> None:
        self.camera_infos.add(stamp_to_ns(msg.header.stamp), msg)

    def _on_frame(self, msg: Any) -> None:
        self._last_frame = time.monotonic()
        self.slot.put(msg)

    def _work(self) -> None:
        last_start = 0.0
        while not self.slot.closed:
            rate = float(self.values["max_rate"])
            wait = last_start + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.2))
                continue
            delivery = self.slot.take(timeout=0.2)
            if delivery is None:
                continue
            last_start = time.monotonic()
            try:
                self._process(delivery.item, delivery.received)
            except ImageDecodeError as err:
                self.bad_frames += 1
                self.failures.add()
                self._log_bad_frame(err)
            except Exception as err:  # noqa: BLE001 - a bad frame must never stop the node
                self.errors += 1
                self.failures.add()
                self.get_logger().error(f"frame failed: {describe_error(err)}",
                                        throttle_duration_sec=5.0)

    def _process(self, msg: Any, received: float) -> None:
        t0 = time.perf_counter()
        rgb = decode_image_message(msg)
        decode_ms = (time.perf_counter() - t0) * 1e3
        stamp_ns = stamp_to_ns(msg.header.stamp)
        camera, camera_note = None, ""
        if self.camera_info_topic():
            camera, camera_note = self.camera_infos.lookup(stamp_ns)
        with self._query_lock:
            localizer = self.localizer
            if localizer is None:
                return
            localizer.config = self.config
            result = localizer.query(rgb, camera=camera)
        estimate, pose_frame = result.pose, ""
        if estimate is not None and camera is None and camera_note \
                and estimate.source == "keyframe" and localizer.camera is None:
            estimate = dataclasses.replace(estimate, reason=camera_note)
        if estimate is not None and estimate.position is not None and self.reloc.base_frame:
            estimate, pose_frame = self._robot_pose(estimate, msg.header.frame_id, stamp_ns)
        if estimate is not None and estimate.source in ("keyframe", "none") and estimate.reason:
            self._note_pose(estimate)
        v = self.values
        now_ns = self.get_clock().now().nanoseconds
        processing_ms = (time.monotonic() - received) * 1e3
        out = result_to_msg(
            result, msg.header, max_candidates=int(v["max_candidates"]),
            map_frame=v["map_frame"] or None, pose=estimate, pose_frame=pose_frame,
            extra_stages=[("decode", decode_ms)], processing_ms=processing_ms,
            latency_ms=(now_ns - stamp_ns) / 1e6)
        gated, new_map_to_odom, robot_in_odom = None, None, None
        if estimate is not None and has_publishable_pose(out):
            # agreement of the map -> odom each estimate implies (the robot's motion removed)
            # where odometry is in TF, else of the poses themselves (module doc of the gate)
            new_map_to_odom, robot_in_odom, odometry = self._map_to_odom(
                estimate, pose_frame or msg.header.frame_id, stamp_ns)
            if new_map_to_odom is not None:
                position, orientation = matrix_to_pose(new_map_to_odom)
                gated = dataclasses.replace(estimate, position=position,
                                            orientation=orientation)
            elif not (odometry or self.reloc.publish_tf):
                gated = estimate  # no odometry in TF at all: the poses themselves
            # else this frame's odometry is missing: it breaks the run (never mixes the two)
        release = self.gate.add(gated, time.monotonic(), at=robot_in_odom)
        self._publish(out, release)
        if release and new_map_to_odom is not None and self.reloc.publish_tf:
            self._update_map_to_odom(new_map_to_odom)
        self.processed.add()
        self.stats.add(processing_ms)

    # --- pose, TF and re-localisation -------------------------------------------------
    def camera_info_topic(self) -> str:
        topic = str(self.values["camera_info_topic"])
        if topic == "none":
            return ""
        if topic:
            return topic
        image_topic = str(self.values["image_topic"])
        if image_topic.endswith("/compressed"):
            image_topic = image_topic[: -len("/compressed")]
        head = image_topic.rsplit("/", 1)[0] if "/" in image_topic else ""
        return f"{head}/camera_info" if head else "camera_info"

    def _note_pose(self, estimate: PoseEstimate) -> None:
        """Log why a frame's pose fell back: each kind of reason once a minute, not per frame."""
        note = f"{estimate.source} pose: {estimate.reason}"
        kind = re.sub(r"\d+(\.\d+)?", "#", note)  # "5 inliers" and "7 inliers" are one kind
        now = time.monotonic()
        if now - self._pose_notes.get(kind, -math.inf) < 60.0:
            return
        if len(self._pose_notes) >= 64:
            self._pose_notes.clear()
        self._pose_notes[kind] = now
        self.get_logger().warning(f"query pose falls back to {note}")

    def _start_tf(self) -> None:
        if not (self.reloc.base_frame or self.reloc.publish_tf) or self._tf:
            return
        from rclpy.clock import Clock, ClockType
        from tf2_ros import Buffer, TransformBroadcaster, TransformListener

        # tied to the node: its clock (sim time), and cleared when that clock jumps back (a
        # bag replayed again), so lookups never meet TF_OLD_DATA
        buffer = Buffer(node=self)
        self._tf = {"buffer": buffer, "listener": TransformListener(buffer, self),
                    "broadcaster": TransformBroadcaster(self)}
        # steady: map -> odom keeps its rate whatever /clock does
        self.create_timer(1.0 / self.reloc.tf_rate, self._broadcast_map_to_odom,
                          callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _lookup(self, target: str, source: str, stamp_ns: int) -> Any:
        """Return target <- source at the image stamp, waiting (in the worker) for late TF.

        The wait ends as soon as the transform is there, and is skipped when the two frames
        are not connected at all (no odometry in TF), so a frame never pays it for nothing.
        """
        from rclpy.duration import Duration
        from rclpy.time import Time

        buffer = self._tf["buffer"]
        wait = Duration(seconds=TF_WAIT_S) if buffer.can_transform(target, source, Time()) \
            else Duration()
        return transform_matrix(buffer.lookup_transform(
            target, source, Time(nanoseconds=stamp_ns), timeout=wait))

    def _robot_pose(self, estimate: PoseEstimate, camera_frame: str,
                    stamp_ns: int) -> tuple[PoseEstimate, str]:
        base = self.reloc.base_frame
        try:
            camera_in_base = self._lookup(base, camera_frame, stamp_ns)
        except Exception as err:  # noqa: BLE001 - tf2 raises several unrelated types
            return refused(f"no transform {base} <- {camera_frame} at the image stamp: "
                           f"{describe_error(err)}", estimate.places), base
        return robot_pose(estimate, camera_in_base), base

    def _map_to_odom(self, estimate: PoseEstimate, robot_frame: str,
                     stamp_ns: int) -> tuple[Any, Any, bool]:
        """Return map <- odom as this estimate implies it, odom <- robot, and if odom is in TF.

        The transforms are None where odometry is not in TF, or not at this image's stamp.
        Without TF in use (no ``base_frame``, no ``publish_tf``) it is not looked for; a failed
        lookup is logged only with ``publish_tf``, which needs it.
        """
        from rclpy.time import Time

        odom = self.reloc.odom_frame
        if not self._tf or not odom or estimate.orientation is None:
            return None, None, False
        try:
            robot_in_odom = self._lookup(odom, robot_frame, stamp_ns)
        except Exception as err:  # noqa: BLE001 - tf2 raises several unrelated types
            if self.reloc.publish_tf:
                self.get_logger().warning(
                    f"map -> odom not updated: no transform {odom} <- {robot_frame} at the "
                    f"image stamp: {describe_error(err)}", throttle_duration_sec=5.0)
            return None, None, bool(self._tf["buffer"].can_transform(odom, robot_frame, Time()))
        return map_to_odom(estimate.matrix(), robot_in_odom), robot_in_odom, True

    def _update_map_to_odom(self, new: Any) -> None:
        why = jump_too_large(self.map_to_odom, new, self.reloc)
        if why:
            self.get_logger().warning(f"map -> odom not updated: {why}",
                                      throttle_duration_sec=5.0)
            return
        self.map_to_odom = new
        self._broadcast_map_to_odom()

    def _broadcast_map_to_odom(self) -> None:
        """Send the held map -> odom, post-dated by ``transform_tolerance`` (as AMCL does).

        It goes out stamped now too, so a listener can look up any stamp from the first
        broadcast on, also right after its buffer was cleared by /clock jumping back.
        """
        from rclpy.duration import Duration

        held, broadcaster = self.map_to_odom, self._tf.get("broadcaster")
        if held is None or broadcaster is None or not self.reloc.publish_tf:
            return
        now = self.get_clock().now()
        if now.nanoseconds == 0:  # sim time before the first /clock
            return
        frame = self.values["map_frame"] or (
            self.localizer.place_map.map_frame if self.localizer is not None else "map")
        ahead = now + Duration(seconds=self.reloc.transform_tolerance)
        broadcaster.sendTransform([transform_msg(held, frame, self.reloc.odom_frame, t.to_msg())
                                   for t in (now, ahead)])

    def _relocalize(self) -> tuple[bool, str]:
        self.gate.request()
        return True, ("the next consistent estimate will be published once"
                      if self.reloc.relocalization_mode == "on_request"
                      else "relocalization_mode is continuous: estimates are published anyway")

    def _output(self, name: str) -> Any:
        """Return the publisher of an optional output, advertised the first time it is on."""
        if name not in self._outputs:
            msg_type, topic, depth = OPTIONAL_OUTPUTS[name]
            self._outputs[name] = self.create_publisher(msg_type, topic, depth)
        return self._outputs[name]

    def _publish(self, out: PlaceRecognition, release: bool) -> None:
        v = self.values
        if not self._outputs:
            return
        self._outputs["result"].publish(out)
        if release and v["publish_pose"]:
            self._output("pose").publish(pose_msg(out))
        if out.accepted and v["publish_loop_closure"]:
            self._output("loop").publish(loop_closure_msg(out))
        if v["publish_markers"]:
            self._output("markers").publish(candidate_markers(out))

    def _log_bad_frame(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._last_bad_log >= 5.0:  # throttled: a broken camera must not flood logs
            self._last_bad_log = now
            self.get_logger().warning(
                f"skipped undecodable frame ({self.bad_frames} so far): {err}")

    # --- services and diagnostics ------------------------------------------------------
    def _reload_map(self) -> tuple[bool, str]:
        path = str(self.values["map_path"])
        current = self.localizer
        if current is None:
            return False, f"node is {self.state_label}: configure it to load a map"
        try:
            new = open_localizer(path, self.spec, self.config, reuse=current)
        except Exception as err:  # noqa: BLE001 - whatever the map holds, keep serving
            self.reload_failures += 1
            return False, (f"reload failed, keeping {self.map_info['map_path']}: "
                           f"{describe_error(err)}")
        with self._query_lock:  # waits for an in-flight query on the old map
            old, self.localizer = self.localizer, new
            self.map_info = map_summary(new)
        if old is not None:
            old.place_map.close()
        return True, f"loaded {path} ({self.map_info['map_places']} places)"

    def diagnostic_statuses(self) -> list[Any]:
        v, now = self.values, time.monotonic()
        last = self._last_frame
        window = diag.Window(
            window_s=float(v["error_window_s"]), received=self.slot.received,
            processed=self.processed.count(now), failed=self.failures.count(now),
            since_last_frame_s=None if last is None else now - last,
            rate_hz=self.stats.rate_hz(now))
        hardware = diag.device_name(self.config.device)
        active = self.state_label == "active"
        counters = {
            "frames_received": self.slot.received, "frames_processed": self.processed.total,
            "frames_dropped": self.slot.dropped, "bad_frames": self.bad_frames,
            "errors": self.errors, "processing_rate_hz": f"{window.rate_hz:.2f}",
            "latency_p50_ms": f"{self.stats.percentile(50):.1f}",
            "latency_p95_ms": f"{self.stats.percentile(95):.1f}",
        }
        loaded = self.localizer is not None
        model = (diag.OK, "map and model loaded") if loaded else (
            diag.ERROR, f"not configured: {self.failure_reason}" if self.failure_reason
            else f"node is {self.state_label}")
        return [
            diag.status(self.diagnostic_name("input"), hardware,
                        diag.input_level(window, float(v["stale_after_s"]), active,
                                         self.state_label),
                        {"image_topic": self.resolve_topic_name(v["image_topic"]),
                         "state": self.state_label}),
            diag.status(self.diagnostic_name("processing"), hardware,
                        diag.rate_level(window, float(v["expected_rate"])), counters),
            diag.status(self.diagnostic_name("failures"), hardware, diag.failure_level(window),
                        {"failed_recent": window.failed, "processed_recent": window.processed,
                         "window_s": window.window_s, "reload_failures": self.reload_failures}),
            diag.status(self.diagnostic_name("map and model"), hardware, model,
                        {**self.map_info, "device": self.config.device,
                         "reload_failures": self.reload_failures}),
        ]


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``localizer_node`` executable."""
    return run_node(LocalizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
