"""The loop-closure node (managed): camera frames and odometry in, loops of this run out.

The node converts messages, holds parameters and schedules work; the decision is
:class:`selavpr_ros.loop.LoopDetector`'s, exactly as offline (``selavpr evaluate-loops``).
Images wait in a queue until the odometry covers their stamp (or ``pose_wait`` passed); each
gets its pose interpolated from the odometry as in map building (:class:`PoseTrack`), and the
distance travelled from :class:`PathTracker`, which also flags odometry gaps and jumps. Every
frame is considered in order (a keyframe missed would leave a hole in the run's database).

Topics (relative names resolve in the node's namespace; remap as usual):
    subscribes  ``image_topic``: sensor_msgs/Image or CompressedImage
                ``odom_topic``: nav_msgs/Odometry
                ``camera_info_topic`` (optional): sensor_msgs/CameraInfo, for ``min_inliers``
                and the loop's relative pose
                ``depth_topic`` (optional): registered depth (16UC1 / 32FC1) for PnP
    publishes   ``loop_closure`` (selavpr_msgs/LoopClosure), one per accepted loop
                ``loop_closure_detection`` (std_msgs/Float64MultiArray [t_now s, t_then s]);
                remap onto LIO-SAM's ``lio_loop/loop_closure_detection``
                ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), once per second
Services:   ``~/save`` (std_srvs/Trigger): write the run's keyframes as a place map at
            ``save_map``; shutdown does the same.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from typing import Any

from geometry_msgs.msg import Pose as PoseMsg
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float64MultiArray

from selavpr_msgs.msg import LoopClosure
from selavpr_ros import __version__
from selavpr_ros.errors import ConfigError, ImageDecodeError, SelaVPRError
from selavpr_ros.extractors.base import Extractor
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor, extractor_for_map
from selavpr_ros.io.images import decode_image_message
from selavpr_ros.io.poses import Pose
from selavpr_ros.localizer.config import from_values, settings
from selavpr_ros.loop import LoopConfig, LoopDetector, LoopResult
from selavpr_ros.loop.odometry import PathTracker
from selavpr_ros.map import PlaceMap
from selavpr_ros.map.fsutil import refuse_writing_onto
from selavpr_ros.ros import diagnostics as diag
from selavpr_ros.ros.conversions import ns_to_stamp, stamp_to_ns
from selavpr_ros.ros.managed_node import ManagedNode
from selavpr_ros.ros.params import Param, from_settings, on_live_update
from selavpr_ros.ros.runtime import autostart, describe_error, run_node
from selavpr_ros.ros.stats import EventWindow, RollingStats
from selavpr_ros.ros.topics import image_message_type, subscription_qos

MAX_QUEUE = 300  # images waiting for odometry; older ones are dropped (counted)
MAX_DEPTHS = 64  # depth images waiting for their colour image

PARAMS = [
    Param("prior_map", "", "place map of an earlier run: loops against it carry its id; it "
          "also gives the extractor (the classical extractor's vocabulary)", read_only=True),
    Param("prior_loops", True, "close loops against prior_map (false: use it only for the "
          "extractor)", read_only=True),
    Param("save_map", "", "where ~/save and shutdown write the run's keyframes as a place map "
          "(empty: not saved)"),
    Param("extractor", "", "feature extractor: empty = prior_map's (else selavpr); selavpr or "
          "classical insist on it", read_only=True),
    Param("checkpoint", "", "SelaVPR weights: official .pth or converted .safetensors",
          read_only=True),
    Param("device", "cpu", "cpu, cuda or cuda:N (extraction)", read_only=True),
    *from_settings(settings(config_class=LoopConfig)),
    Param("image_topic", "camera/image_raw", "camera topic (relative: in the node's namespace)",
          read_only=True),
    Param("image_type", "auto", "raw, compressed, or auto (compressed if the topic name ends "
          "in /compressed)", read_only=True),
    Param("odom_topic", "odom", "odometry topic (nav_msgs/Odometry)", read_only=True),
    Param("camera_info_topic", "", "sensor_msgs/CameraInfo topic enabling the geometric check "
          "(min_inliers; empty: none)", read_only=True),
    Param("depth_topic", "", "registered depth images (16UC1 mm / 32FC1 m, the colour image's "
          "stamps) for metric relative poses by PnP (empty: two-view from the matched "
          "keyframe's neighbours); needs camera_info_topic", read_only=True),
    Param("relative_pose_two_view", False, "without depth, estimate relative poses from the "
          "matched keyframe's neighbours (coarse; covariance a lower bound)", read_only=True),
    Param("qos_reliability", "reliable", "image subscription QoS: best_effort or reliable",
          read_only=True),
    Param("qos_depth", 100, "image subscription queue depth", 1, 10000, read_only=True),
    Param("pose_tolerance", 0.1, "max seconds between an image and the odometry around it",
          0.0, 60.0),
    Param("pose_wait", 1.0, "seconds an image waits for odometry past its stamp", 0.0, 60.0),
    Param("max_speed", 50.0, "odometry faster than this (m/s) is a jump", 0.1, 1e4),
    Param("max_odom_gap", 1.0, "odometry silent longer than this (s) is a gap", 0.01, 3600.0),
    Param("stale_after_s", 3.0, "diagnostics: input is STALE after this long without a frame "
          "(s)", 0.1, 3600.0),
    Param("error_window_s", 30.0, "diagnostics: failed frames count for this long (s)",
          1.0, 3600.0),
    Param("autostart", True, "configure and activate at start (false: wait for a lifecycle "
          "manager)", read_only=True),
]

YAML_HEADER = """Parameters of loop_closure_node (README, "Loop closure for SLAM"); written by
selavpr_ros.ros.params.render_yaml from the node's declarations. Pass with
  --ros-args --params-file config/loop_closure.yaml   (the launch file does this)."""


def loop_config(values: dict[str, Any]) -> LoopConfig:
    """Return the core's LoopConfig from the node's parameter values (checked by the core)."""
    return from_values(LoopConfig, values)


def open_detector(values: dict[str, Any], config: LoopConfig
                  ) -> tuple[LoopDetector, Extractor, PlaceMap | None]:
    """Build the extractor (from prior_map when given) and the detector."""
    spec = ExtractorSpec(kind=values["extractor"], checkpoint=values["checkpoint"],
                         device=values["device"], batch_size=1)
    prior: PlaceMap | None = None
    if values["prior_map"]:
        prior = PlaceMap.open(values["prior_map"])
    try:
        if prior is not None:
            extractor = extractor_for_map(spec, prior)
        else:
            extractor = create_extractor(spec)
            if extractor.needs_fit:
                raise ConfigError("the classical extractor needs a vocabulary: give prior_map "
                                  "(a map built by selavpr build-map)")
        use = prior if values["prior_loops"] else None
        return LoopDetector(extractor, config, prior=use), extractor, prior
    except BaseException:
        if prior is not None:
            prior.close()
        raise


def check_save_map(values: dict[str, Any]) -> None:
    """Refuse a save_map that would replace the prior map this node reads."""
    if values["save_map"]:
        refuse_writing_onto(values["save_map"], {"prior_map": values["prior_map"]},
                            "loop_closure_node")


def pose_to_msg(position: tuple[float, ...] | None,
                orientation: tuple[float, ...] | None) -> PoseMsg:
    out = PoseMsg()
    if position is not None:
        out.position.x, out.position.y, out.position.z = (float(v) for v in position)
    if orientation is not None:
        q = out.orientation
        q.x, q.y, q.z, q.w = (float(v) for v in orientation)
    return out


def loop_msg(result: LoopResult, frame_id: str) -> LoopClosure:
    """Return the LoopClosure message of an accepted loop."""
    kf = result.keyframe
    out = LoopClosure()
    out.header.stamp = ns_to_stamp(kf.stamp_ns)
    out.header.frame_id = frame_id
    out.stamp_now = ns_to_stamp(kf.stamp_ns)
    out.stamp_then = ns_to_stamp(result.then_stamp_ns)
    out.keyframe_id_now = kf.id
    out.keyframe_id_then = result.then_id
    out.map_id = result.map_id
    rel = result.relative
    out.has_relative_pose = rel is not None and rel.ok
    if rel is not None and rel.ok:
        assert rel.covariance is not None
        out.relative_pose.pose = pose_to_msg(rel.position, rel.orientation)
        out.relative_pose.covariance = [float(v) for v in rel.covariance.reshape(-1)]
    out.pose_now = pose_to_msg(kf.position, kf.orientation)
    out.pose_then = pose_to_msg(result.then_position, result.then_orientation)
    out.global_similarity = result.global_similarity
    out.mnn_score = result.mnn_score
    out.score_fraction = result.score_fraction
    out.margin = result.margin
    out.consistency = result.consistency
    return out


def describe_relative(result: LoopResult) -> str:
    rel = result.relative
    if rel is None:
        return "none (no camera info)"
    if not rel.ok:
        return f"none ({rel.reason})"
    return f"{rel.source}, {rel.inliers} inliers"


def lio_sam_msg(result: LoopResult) -> Float64MultiArray:
    """LIO-SAM's loop input: [current keyframe time, matched keyframe time] in seconds."""
    return Float64MultiArray(data=[result.keyframe.stamp_ns / 1e9, result.then_stamp_ns / 1e9])


class LoopClosureNode(ManagedNode):
    """Detects loops of the current run from images and odometry."""

    def __init__(self) -> None:
        super().__init__("loop_closure_node", PARAMS)
        self.config = loop_config(self.values)
        self.image_msg_type = image_message_type(self.values["image_topic"],
                                                 self.values["image_type"])
        self.qos = subscription_qos(self.values["qos_reliability"], self.values["qos_depth"])
        on_live_update(self, self.values, self._check_update, self._apply_update)

        self._cond = threading.Condition()
        self._detector_lock = threading.Lock()  # process vs save
        self._images: deque[tuple[int, Any, float]] = deque()
        self._depths: dict[int, Any] = {}  # stamp -> depth message (a short window)
        self._path = PathTracker(self.values["max_speed"], self.values["max_odom_gap"])
        self._odom_frame = ""
        self._stopping = True
        self.detector: LoopDetector | None = None
        self.extractor: Extractor | None = None
        self.prior: PlaceMap | None = None
        self._outputs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._worker: threading.Thread | None = None
        self.stats = RollingStats()
        self.failures = EventWindow(self.values["error_window_s"])
        self.processed = EventWindow(self.values["error_window_s"])
        self.counts = dict.fromkeys(("frames_received", "keyframes", "loops", "no_pose",
                                     "bad_frames", "dropped", "errors", "odom_jumps",
                                     "odom_gaps", "odom_rejected", "odom_resets",
                                     "bad_depth"), 0)
        self._last_frame: float | None = None

        self.add_trigger_service("~/save", self.save)
        self.publish_diagnostics(self.diagnostic_statuses)
        autostart(self, bool(self.values["autostart"]), lambda: self.failure_reason)

    # --- parameters ---------------------------------------------------------------------
    def _check_update(self, proposed: dict[str, Any]) -> None:
        loop_config(proposed)
        check_save_map(proposed)

    def _apply_update(self, values: dict[str, Any]) -> None:
        self.config = loop_config(values)
        self._path.max_speed_mps = float(values["max_speed"])
        self._path.max_gap_s = float(values["max_odom_gap"])
        self.failures.horizon_s = self.processed.horizon_s = float(values["error_window_s"])
        with self._detector_lock:
            if self.detector is not None:
                self.detector.set_config(self.config)

    # --- lifecycle ----------------------------------------------------------------------
    def configure(self) -> None:
        check_save_map(self.values)
        detector, extractor, prior = open_detector(self.values, self.config)
        detector.two_view_relative = bool(self.values["relative_pose_two_view"])
        with self._detector_lock:
            self.detector, self.extractor, self.prior = detector, extractor, prior
        self._outputs = {
            "loop": self.create_publisher(LoopClosure, "loop_closure", 10),
            "lio": self.create_publisher(Float64MultiArray, "loop_closure_detection", 10),
        }
        where = (f"prior map {prior.path} ({prior.count} places"
                 f"{'' if self.values['prior_loops'] else ', extractor only'})"
                 if prior is not None else "no prior map")
        self.get_logger().info(f"configured: {extractor.info.describe()}, {where}")

    def activate(self) -> None:
        self._stopping = False
        self._subs = [
            self.create_subscription(self.image_msg_type, self.values["image_topic"],
                                     self._on_image, self.qos,
                                     callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_subscription(Odometry, self.values["odom_topic"], self._on_odom, 1000,
                                     callback_group=MutuallyExclusiveCallbackGroup()),
        ]
        if self.values["depth_topic"]:
            self._subs.append(self.create_subscription(
                Image, self.values["depth_topic"], self._on_depth, self.qos,
                callback_group=MutuallyExclusiveCallbackGroup()))
        if self.values["camera_info_topic"]:
            self._subs.append(self.create_subscription(
                CameraInfo, self.values["camera_info_topic"], self._on_camera_info, 10,
                callback_group=MutuallyExclusiveCallbackGroup()))
        self._worker = threading.Thread(target=self._work, name="loop_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"selavpr_ros {__version__} loop_closure_node started: camera "
            f"{self.resolve_topic_name(self.values['image_topic'])} "
            f"({self.image_msg_type.__name__}), odometry "
            f"{self.resolve_topic_name(self.values['odom_topic'])}")

    def deactivate(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=60.0)
            self._worker = None

    def release(self, final: bool) -> None:
        """Save the run at shutdown (``final``; not at cleanup), then close the prior map."""
        if final and self.detector is not None:
            self.log_outcome(*self.save())
        for publisher in self._outputs.values():
            self.destroy_publisher(publisher)
        self._outputs = {}
        with self._detector_lock:
            prior, self.prior, self.detector = self.prior, None, None
        if prior is not None:
            prior.close()

    # --- callbacks ----------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        self._last_frame = time.monotonic()
        stamp = stamp_to_ns(msg.header.stamp)
        with self._cond:
            self.counts["frames_received"] += 1
            self._images.append((stamp, msg, time.monotonic()))
            if len(self._images) > MAX_QUEUE:
                self._images.popleft()
                self.counts["dropped"] += 1
            self._cond.notify()

    def _on_depth(self, msg: Any) -> None:
        with self._cond:
            self._depths[stamp_to_ns(msg.header.stamp)] = msg
            while len(self._depths) > MAX_DEPTHS:
                del self._depths[min(self._depths)]

    def _depth_m(self, stamp: int) -> Any:
        """Return the depth image (metres) of an image stamp, or None (logged: no PnP)."""
        if not self.values["depth_topic"]:
            return None
        from selavpr_ros.geometry.depth import DepthImageError, depth_in_metres
        from selavpr_ros.io.bags import depth_decoder

        tolerance = round(float(self.values["pose_tolerance"]) * 1e9)
        with self._cond:
            near = [s for s in self._depths if abs(s - stamp) <= tolerance]
            msg = self._depths[min(near, key=lambda s: abs(s - stamp))] if near else None
        try:
            if msg is None:
                raise DepthImageError(f"no depth image within {tolerance / 1e9:g} s")
            return depth_in_metres(*depth_decoder(msg)())
        except DepthImageError as err:
            self.counts["bad_depth"] += 1
            self.get_logger().warning(f"keyframe at {stamp} ns without depth: {err}",
                                      throttle_duration_sec=5.0)
            return None

    def _on_odom(self, msg: Any) -> None:
        p = msg.pose.pose
        try:
            pose = Pose(stamp_to_ns(msg.header.stamp),
                        (p.position.x, p.position.y, p.position.z),
                        (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w))
        except ValueError as err:
            self.counts["odom_rejected"] += 1
            self.get_logger().warning(f"ignoring odometry: {err}", throttle_duration_sec=5.0)
            return
        with self._cond:
            event = self._path.add(pose)
            if event == "old":
                self.counts["odom_rejected"] += 1
                self.get_logger().warning(
                    f"ignoring odometry at {pose.stamp_ns} ns: older than the last one",
                    throttle_duration_sec=5.0)
                return
            if event in ("jump", "reset"):  # the run's motion is broken here
                self.counts["odom_jumps" if event == "jump" else "odom_resets"] += 1
                with self._detector_lock:
                    if self.detector is not None:
                        self.detector.restart_consistency()
            elif event == "gap":
                self.counts["odom_gaps"] += 1
            elif event == "outlier":
                self.counts["odom_rejected"] += 1
            self._odom_frame = self._odom_frame or str(msg.header.frame_id)
            self._cond.notify()

    def _on_camera_info(self, msg: Any) -> None:
        detector = self.detector
        if detector is None or detector.camera is not None:
            return
        try:
            from selavpr_ros.geometry.camera import CameraModel

            roi = msg.roi
            camera = CameraModel.from_camera_info({
                "width": msg.width, "height": msg.height,
                "distortion_model": msg.distortion_model, "d": list(msg.d), "k": list(msg.k),
                "r": list(msg.r), "p": list(msg.p), "binning_x": msg.binning_x,
                "binning_y": msg.binning_y,
                "roi": {"x_offset": roi.x_offset, "y_offset": roi.y_offset,
                        "height": roi.height, "width": roi.width}})
        except Exception as err:  # noqa: BLE001 - a bad camera info must not end the node
            self.get_logger().error(f"camera info refused, no geometric check: "
                                    f"{describe_error(err)}", throttle_duration_sec=30.0)
            return
        detector.camera = camera
        how = ("PnP with depth" if self.values["depth_topic"] else
               "two-view" if self.values["relative_pose_two_view"] else
               "none without depth_topic")
        self.get_logger().info(f"camera info received ({msg.width}x{msg.height}): geometric "
                               f"check min_inliers {self.config.min_inliers}, relative poses: "
                               f"{how}")

    # --- worker -------------------------------------------------------------------------
    def _next(self) -> tuple[int, Any, Pose | None, float | None] | None:
        """Oldest image once its odometry is decided (call with the lock held)."""
        if not self._images:
            return None
        stamp, msg, arrival = self._images[0]
        track = self._path.track
        last = track.last_stamp
        waited = time.monotonic() - arrival >= float(self.values["pose_wait"])
        if not (self._stopping or waited or (last is not None and last >= stamp)):
            return None
        self._images.popleft()
        tolerance = round(float(self.values["pose_tolerance"]) * 1e9)
        pose = track.at(stamp, tolerance)
        track.drop_before(stamp - tolerance)
        for old in [s for s in self._depths if s < stamp - tolerance]:
            del self._depths[old]
        return stamp, msg, pose, self._path.path_at(stamp)

    def _work(self) -> None:
        while True:
            with self._cond:
                item = self._next()
                if item is None:
                    if self._stopping:
                        return
                    self._cond.wait(timeout=0.05)
                    continue
            try:
                self._process(*item)
            except ImageDecodeError as err:
                self.counts["bad_frames"] += 1
                self.failures.add()
                self.get_logger().warning(f"skipped undecodable frame: {err}",
                                          throttle_duration_sec=5.0)
            except Exception as err:  # noqa: BLE001 - a bad frame must never stop the node
                self.counts["errors"] += 1
                self.failures.add()
                self.get_logger().error(f"frame failed: {describe_error(err)}",
                                        throttle_duration_sec=5.0)

    def _process(self, stamp: int, msg: Any, pose: Pose | None, path: float | None) -> None:
        t0 = time.monotonic()
        if pose is None:
            self.counts["no_pose"] += 1
            self.get_logger().warning(
                f"no odometry within {self.values['pose_tolerance']:.3f} s of image {stamp} ns; "
                "skipped (no loop without a pose)", throttle_duration_sec=5.0)
            return
        with self._detector_lock:
            detector = self.detector
            if detector is None or not detector.is_keyframe(pose):
                return
            rgb = decode_image_message(msg)
            result = detector.process(pose, image=rgb, frame_id=str(msg.header.frame_id),
                                      path_m=path, depth_m=self._depth_m(stamp))
        self.processed.add()
        self.stats.add((time.monotonic() - t0) * 1e3)
        if result is None:
            return
        self.counts["keyframes"] += 1
        self.get_logger().debug(f"keyframe {result.keyframe.id} at {stamp} ns: "
                                f"{result.reason or 'loop'}")
        if not result.loop:
            return
        self.counts["loops"] += 1
        self.get_logger().info(
            f"loop: keyframe {result.keyframe.id} ({stamp / 1e9:.3f} s) revisits "
            f"{'keyframe' if not result.map_id else 'prior place'} {result.then_id} "
            f"({result.then_stamp_ns / 1e9:.3f} s), MNN {result.mnn_score:.0f}, "
            f"consistency {result.consistency}, relative pose "
            f"{describe_relative(result)}")
        pubs = self._outputs
        if pubs:
            pubs["loop"].publish(loop_msg(result, self._odom_frame))
            pubs["lio"].publish(lio_sam_msg(result))

    # --- saving ---------------------------------------------------------------------------
    def save(self) -> tuple[bool, str]:
        """Write the run's keyframes to ``save_map``; (success, message)."""
        path = str(self.values["save_map"])
        with self._detector_lock:
            detector, extractor = self.detector, self.extractor
            if detector is None or extractor is None:
                return False, f"node is {self.state_label}: nothing to save"
            if not path:
                return False, "parameter save_map is empty: the run is not saved"
            if not len(detector.db):
                return False, "no keyframes yet: nothing saved"
            try:
                check_save_map(self.values)
                count = detector.db.save(path, extractor, source="loop_closure_node",
                                         map_frame=self._odom_frame or "odom",
                                         camera=detector.camera)
            except (SelaVPRError, OSError, ValueError) as err:
                return False, f"saving the run to {path} failed: {describe_error(err)}"
        return True, f"saved the run's {count} keyframes to {path}"

    # --- diagnostics --------------------------------------------------------------------
    def diagnostic_statuses(self) -> list[Any]:
        v, now = self.values, time.monotonic()
        last = self._last_frame
        window = diag.Window(
            window_s=float(v["error_window_s"]), received=self.counts["frames_received"],
            processed=self.processed.count(now), failed=self.failures.count(now),
            since_last_frame_s=None if last is None else now - last,
            rate_hz=self.stats.rate_hz(now))
        hardware = diag.device_name(str(v["device"]))
        active = self.state_label == "active"
        detector = self.detector
        counters = {**self.counts,
                    "run_keyframes": len(detector.db) if detector is not None else 0,
                    "latency_p50_ms": f"{self.stats.percentile(50):.1f}",
                    "latency_p95_ms": f"{self.stats.percentile(95):.1f}"}
        return [
            diag.status(self.diagnostic_name("input"), hardware,
                        diag.input_level(window, float(v["stale_after_s"]), active,
                                         self.state_label),
                        {"image_topic": self.resolve_topic_name(v["image_topic"]),
                         "odom_topic": self.resolve_topic_name(v["odom_topic"]),
                         "state": self.state_label}),
            diag.status(self.diagnostic_name("processing"), hardware, diag.failure_level(window),
                        counters),
        ]


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``loop_closure_node`` executable."""
    return run_node(LoopClosureNode, args)


if __name__ == "__main__":
    sys.exit(main())
