"""The localizer node: camera frames in, recognised places and poses out.

The node only converts messages, holds parameters and schedules work; answering a frame is
:class:`selavpr_ros.localizer.Localizer`'s job, exactly as offline. The image callback drops
each message into a one-frame slot; a worker thread always processes the newest frame, so
latency never grows with a backlog (replaced frames are counted as dropped).

Topics (relative names resolve in the node's namespace; remap as usual):
    subscribes  ``image_topic`` (parameter): sensor_msgs/Image or CompressedImage
    publishes   ``place_recognition`` (selavpr_msgs/PlaceRecognition), one per processed frame
                ``pose`` (geometry_msgs/PoseWithCovarianceStamped) for accepted matches;
                remap to /initialpose for re-localisation
                ``loop_closure`` (std_msgs/Float64MultiArray [query s, place s]) if enabled
                ``candidate_markers`` (visualization_msgs/MarkerArray) if enabled
                ``/diagnostics`` (diagnostic_msgs/DiagnosticArray), once per second
Services:   ``~/reload_map`` (std_srvs/Trigger): reopen ``map_path`` and swap atomically; a
            failed reload keeps the current map and says why.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from selavpr_msgs.msg import PlaceRecognition
from selavpr_ros import __version__
from selavpr_ros.errors import ConfigError, ImageDecodeError, SelaVPRError
from selavpr_ros.extractors.factory import ExtractorSpec, create_extractor
from selavpr_ros.io.images import decode_image_message
from selavpr_ros.localizer import Localizer, LocalizerConfig
from selavpr_ros.map import PlaceMap
from selavpr_ros.ros.latest_frame import LatestFrameSlot
from selavpr_ros.ros.runtime import run_node
from selavpr_ros.ros.stats import RollingStats
from selavpr_ros.ros.conversions import (candidate_markers, loop_closure_msg, pose_msg,
                                         result_to_msg, stamp_to_ns)
from selavpr_ros.ros.params import Param, declare

PARAMS = [
    Param("map_path", "", "place map directory (required)"),
    Param("extractor", "selavpr", "feature extractor: selavpr (or classical, for maps built "
          "with it)"),
    Param("checkpoint", "", "SelaVPR weights: official .pth or converted .safetensors"),
    Param("device", "cpu", "cpu, cuda or cuda:N (extraction and re-ranking)"),
    Param("precision", "fp32", "fp32, or fp16/bf16 autocast on CUDA"),
    Param("top_k", 100, "places retrieved by global descriptor", 1, 10000),
    Param("rerank_k", -1, "how many of top_k are re-ranked by MNN (-1: all, 0: none)", -1, 10000),
    Param("rerank_memory_mb", 256.0, "working memory of the MNN re-ranker (MiB)", 1.0, 1e6),
    Param("gpu_cache_mb", 4096.0, "on CUDA, keep the map's local features on the GPU when "
          "they fit this budget (MiB; 0: off)", 0.0, 1e7),
    Param("min_score", 0, "acceptance: minimum MNN count of the best candidate", 0, 10**7),
    Param("min_score_fraction", 0.0, "acceptance: minimum MNN count / query features", 0.0, 1.0),
    Param("min_margin", 1.1, "acceptance: best vs best distinct candidate (ratio; see "
          "margin_mode)", 0.0, 1e9),
    Param("margin_mode", "ratio", "margin as 'ratio' or 'difference'"),
    Param("margin_distance_m", 25.0, "a distinct candidate is at least this far (m)", 0.0, 1e9),
    Param("margin_id_distance", 10, "... or this many ids away when poses are missing", 1, 10**9),
    Param("min_global_similarity", -1.0, "acceptance: minimum global cosine similarity",
          -1.0, 1.0),
    Param("confidence_full_fraction", 0.25, "score fraction at which confidence saturates",
          1e-6, 1.0),
    Param("image_topic", "/camera/image_raw", "camera topic"),
    Param("image_type", "auto", "raw, compressed, or auto (compressed if the topic name ends "
          "in /compressed)"),
    Param("qos_reliability", "best_effort", "image subscription QoS: best_effort or reliable"),
    Param("qos_depth", 1, "image subscription queue depth", 1, 1000),
    Param("max_rate", 0.0, "process at most this many frames per second (0: no limit)",
          0.0, 1000.0),
    Param("map_frame", "", "frame of published poses (empty: the map's own frame)"),
    Param("max_candidates", 10, "candidates listed in each PlaceRecognition", 0, 10000),
    Param("position_variance", 4.0, "pose covariance: x/y/z variance (m^2) at confidence 1",
          0.0, 1e9),
    Param("orientation_variance", 0.1, "pose covariance: roll/pitch/yaw variance (rad^2) at "
          "confidence 1", 0.0, 1e9),
    Param("publish_pose", True, "publish PoseWithCovarianceStamped for accepted matches"),
    Param("publish_loop_closure", False, "publish [query time, place time] for accepted matches"),
    Param("publish_markers", False, "publish candidate markers for RViz"),
]


def localizer_config(values: dict[str, Any]) -> LocalizerConfig:
    """The core's LocalizerConfig from the node's parameter values."""
    rerank_k = int(values["rerank_k"])
    precision = "fp16" if values["precision"] == "fp16" else "fp32"
    return LocalizerConfig(
        top_k=int(values["top_k"]), rerank_k=None if rerank_k < 0 else rerank_k,
        device=str(values["device"]), precision=precision,
        rerank_memory_mb=float(values["rerank_memory_mb"]),
        gpu_cache_mb=float(values["gpu_cache_mb"]),
        min_score=int(values["min_score"]),
        min_score_fraction=float(values["min_score_fraction"]),
        min_margin=float(values["min_margin"]), margin_mode=values["margin_mode"],
        margin_distance_m=float(values["margin_distance_m"]),
        margin_id_distance=int(values["margin_id_distance"]),
        min_global_similarity=float(values["min_global_similarity"]),
        confidence_full_fraction=float(values["confidence_full_fraction"]),
    )


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
            extractor = create_extractor(spec, place_map)
        return Localizer(place_map, extractor, config)
    except BaseException:
        place_map.close()
        raise


class LocalizerNode(Node):
    """Subscribes to a camera topic and publishes ``selavpr_msgs/PlaceRecognition``."""

    def __init__(self) -> None:
        super().__init__("localizer_node")
        self.values = declare(self, PARAMS)
        v = self.values
        self.spec = ExtractorSpec(kind=v["extractor"], checkpoint=v["checkpoint"],
                                  device=v["device"], precision=v["precision"], batch_size=1)
        self.config = localizer_config(v)
        self.covariance_diagonal = [v["position_variance"]] * 3 + [v["orientation_variance"]] * 3
        self._localizer_lock = threading.Lock()
        self.localizer = open_localizer(v["map_path"], self.spec, self.config)

        self.result_pub = self.create_publisher(PlaceRecognition, "place_recognition", 10)
        self.pose_pub = (self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
                         if v["publish_pose"] else None)
        self.loop_pub = None
        if v["publish_loop_closure"]:
            self.loop_pub = self.create_publisher(Float64MultiArray, "loop_closure", 10)
        self.marker_pub = None
        if v["publish_markers"]:
            self.marker_pub = self.create_publisher(MarkerArray, "candidate_markers", 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.slot = LatestFrameSlot()
        self.stats = RollingStats()
        self.processed = self.bad_frames = self.errors = 0
        self._last_bad_log = 0.0
        self._subscribe_camera()
        service_group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reload_map", self._reload_map,
                            callback_group=service_group)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=service_group)
        self._worker = threading.Thread(target=self._work, name="localizer_worker", daemon=True)
        self._worker.start()
        m = self.localizer.place_map
        self.get_logger().info(
            f"selavpr_ros {__version__} localizer_node started: map {m.path} ({len(m)} places, "
            f"{m.extractor_info.name}), camera {self.camera_topic} ({self.image_type}), "
            f"device {self.config.device}")

    def _subscribe_camera(self) -> None:
        v = self.values
        self.camera_topic = str(v["image_topic"])
        image_type = str(v["image_type"])
        if image_type == "auto":
            image_type = "compressed" if self.camera_topic.endswith("/compressed") else "raw"
        if image_type not in ("raw", "compressed"):
            raise ConfigError(f"image_type must be raw, compressed or auto, got '{image_type}'")
        reliability = {"best_effort": ReliabilityPolicy.BEST_EFFORT,
                       "reliable": ReliabilityPolicy.RELIABLE}.get(str(v["qos_reliability"]))
        if reliability is None:
            raise ConfigError(f"qos_reliability must be best_effort or reliable, got "
                              f"'{v['qos_reliability']}'")
        self.image_type = image_type
        qos = QoSProfile(depth=int(v["qos_depth"]), reliability=reliability)
        msg_type = CompressedImage if image_type == "compressed" else Image
        self.create_subscription(msg_type, self.camera_topic, self.slot.put, qos,
                                 callback_group=MutuallyExclusiveCallbackGroup())

    # --- worker -------------------------------------------------------------------------
    def _work(self) -> None:
        min_period = 1.0 / self.values["max_rate"] if self.values["max_rate"] > 0 else 0.0
        last_start = 0.0
        while not self.slot.closed:
            wait = last_start + min_period - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            delivery = self.slot.take(timeout=0.2)
            if delivery is None:
                continue
            last_start = time.monotonic()
            try:
                self._process(delivery.item, delivery.received)
            except ImageDecodeError as err:
                self.bad_frames += 1
                self._log_bad_frame(err)
            except Exception as err:  # noqa: BLE001 - a bad frame must never stop the node
                self.errors += 1
                self.get_logger().error(f"frame failed: {type(err).__name__}: {err}")

    def _process(self, msg: Any, received: float) -> None:
        t0 = time.perf_counter()
        rgb = decode_image_message(msg)
        decode_ms = (time.perf_counter() - t0) * 1e3
        with self._localizer_lock:
            localizer = self.localizer
        result = localizer.query(rgb)
        now_ns = self.get_clock().now().nanoseconds
        processing_ms = (time.monotonic() - received) * 1e3
        latency_ms = (now_ns - stamp_to_ns(msg.header.stamp)) / 1e6
        out = result_to_msg(
            result, msg.header, max_candidates=int(self.values["max_candidates"]),
            covariance_diagonal=self.covariance_diagonal,
            map_frame=self.values["map_frame"] or None,
            extra_stages=[("decode", decode_ms)], processing_ms=processing_ms,
            latency_ms=latency_ms)
        self.result_pub.publish(out)
        if out.accepted:
            if self.pose_pub is not None:
                self.pose_pub.publish(pose_msg(out))
            if self.loop_pub is not None:
                self.loop_pub.publish(loop_closure_msg(out))
        if self.marker_pub is not None:
            self.marker_pub.publish(candidate_markers(out))
        self.processed += 1
        self.stats.add(processing_ms)

    def _log_bad_frame(self, err: Exception) -> None:
        now = time.monotonic()
        if now - self._last_bad_log >= 5.0:  # throttled: a broken camera must not flood logs
            self._last_bad_log = now
            self.get_logger().warning(
                f"skipped undecodable frame ({self.bad_frames} so far): {err}")

    # --- services and diagnostics ------------------------------------------------------
    def _reload_map(self, _request: Trigger.Request,
                    response: Trigger.Response) -> Trigger.Response:
        path = str(self.get_parameter("map_path").value)
        try:
            with self._localizer_lock:
                current = self.localizer
            new = open_localizer(path, self.spec, self.config, reuse=current)
        except SelaVPRError as err:
            response.success = False
            response.message = f"reload failed, keeping {current.place_map.path}: {err}"
            self.get_logger().error(response.message)
            return response
        with self._localizer_lock:
            old, self.localizer = self.localizer, new
        old.place_map.close()
        response.success = True
        response.message = f"loaded {path} ({len(new.place_map)} places)"
        self.get_logger().info(response.message)
        return response

    def _publish_diagnostics(self) -> None:
        with self._localizer_lock:
            place_map = self.localizer.place_map
        values = {
            "frames_received": self.slot.received, "frames_processed": self.processed,
            "frames_dropped": self.slot.dropped, "bad_frames": self.bad_frames,
            "errors": self.errors, "processing_rate_hz": f"{self.stats.rate_hz():.2f}",
            "latency_p50_ms": f"{self.stats.percentile(50):.1f}",
            "latency_p95_ms": f"{self.stats.percentile(95):.1f}",
            "map_path": str(place_map.path), "map_id": place_map.map_id,
            "map_places": len(place_map), "extractor": place_map.extractor_info.name,
            "device": self.config.device,
        }
        status = DiagnosticStatus(
            name=f"{self.get_name()}: place recognition", hardware_id=self.config.device,
            level=DiagnosticStatus.OK if not self.errors else DiagnosticStatus.WARN,
            message="running" if not self.errors else f"{self.errors} frames failed",
            values=[KeyValue(key=k, value=str(val)) for k, val in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        self.slot.close()
        self._worker.join(timeout=5.0)
        self.localizer.place_map.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Entry point of the ``localizer_node`` executable."""
    return run_node(LocalizerNode, args)


if __name__ == "__main__":
    sys.exit(main())
