"""Live evaluation: replay a bag to a running ``localizer_node`` and collect what it publishes.

The true end-to-end figures: the frames go through DDS to the node, which decodes, answers
and publishes as it would on a robot, dropping frames it cannot keep up with (its newest-frame
policy). Results are matched to the sent frames by header stamp; latency is measured in this
process from publishing a frame to receiving its result, so both ends use one clock.
The answers become the same :class:`QueryRecord` objects as offline, scored the same way.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError, SelaVPRError
from selavpr_ros.eval import latency as lat
from selavpr_ros.eval.evaluate import QueryRecord
from selavpr_ros.eval.metrics import frame_index_of
from selavpr_ros.extractors.factory import ExtractorSpec
from selavpr_ros.io.frames import Frame
from selavpr_ros.localizer import LocalizerConfig
from selavpr_ros.localizer.config import config_values
from selavpr_ros.ros.conversions import stamp_to_ns

log = logging.getLogger(__name__)

NODE_MODULE = "selavpr_ros.nodes.localizer_node"


class LiveEvalError(SelaVPRError):
    """The node could not be started or reached, or it stopped during the replay."""


@dataclass(frozen=True)
class LiveOptions:
    """How the live run is set up.

    Attributes:
        bag, image_topic: the bag and the image topic to replay (only the selected frames).
        rate: replay speed factor.
        node_running: use an existing node instead of starting one.
        result_topic: where the node publishes ``selavpr_msgs/PlaceRecognition``.
        startup_timeout_s: how long the node may take to subscribe to the image topic.
        drain_timeout_s: after the last frame, how long to wait for outstanding answers.
        map_path, spec, config: what the started node is given (the offline run's settings).
        log_dir: where the started node's output goes (``localizer_node.log``).
        qos_depth: the node's image subscription depth (RELIABLE QoS).
    """

    bag: str
    image_topic: str
    map_path: str
    spec: ExtractorSpec
    config: LocalizerConfig
    rate: float = 1.0
    node_running: bool = False
    result_topic: str = "/place_recognition"
    startup_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    log_dir: Path = Path(".")
    qos_depth: int = 10

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate must be > 0, got {self.rate}")
        if not self.image_topic:
            raise ConfigError("live evaluation needs the bag's image topic")


@dataclass
class LiveRun:
    records: list[QueryRecord]
    wall_s: float
    info: dict[str, Any] = field(default_factory=dict)


def node_parameters(options: LiveOptions, image_type: str = "auto") -> list[str]:
    """``-p name:=value`` arguments giving the node the offline run's settings."""
    spec, cfg = options.spec, options.config
    values: dict[str, Any] = {
        "map_path": options.map_path, "device": spec.device,
        "precision": spec.precision, **config_values(cfg),
        "image_topic": options.image_topic, "image_type": image_type,
        "qos_reliability": "reliable",
        "qos_depth": options.qos_depth, "max_candidates": cfg.top_k, "publish_pose": False,
    }
    if spec.checkpoint:
        values["checkpoint"] = spec.checkpoint
    if spec.kind:  # else the node takes the map's
        values["extractor"] = spec.kind
    args: list[str] = []
    for name, value in values.items():
        if value == "":  # rcl cannot parse "name:=" (and "" is every text default)
            continue
        text = repr(value) if isinstance(value, float) else str(value).lower() if isinstance(
            value, bool) else str(value)
        args += ["-p", f"{name}:={text}"]
    return args


def record_from_message(frame: Frame, index: int, msg: Any, latency_ms: float) -> QueryRecord:
    """Return the :class:`QueryRecord` of a ``PlaceRecognition`` (score fraction unknown)."""
    cands = list(msg.candidates)
    top = cands[0] if cands else None
    has_pose = bool(msg.accepted) and msg.pose_source != "none"
    p, q = msg.matched_pose.pose.position, msg.matched_pose.pose.orientation
    matched = next((c for c in cands if c.place_id == msg.matched_place_id), None)
    return QueryRecord(
        orientation=frame.pose.orientation if frame.pose is not None else None,
        pose_source=str(msg.pose_source) if has_pose else "none",
        pose_position=(p.x, p.y, p.z) if has_pose else None,
        pose_orientation=(q.x, q.y, q.z, q.w) if has_pose and msg.pose_has_orientation
        else None,
        keyframe_position=(matched.pose.position.x, matched.pose.position.y,
                           matched.pose.position.z)
        if msg.accepted and matched is not None and matched.has_pose else None,
        keyframe_orientation=(matched.pose.orientation.x, matched.pose.orientation.y,
                              matched.pose.orientation.z, matched.pose.orientation.w)
        if msg.accepted and matched is not None and matched.has_pose else None,
        index=index, stamp_ns=frame.stamp_ns, source_ref=frame.source_ref,
        frame_index=frame_index_of(frame.source_ref),
        position=frame.pose.position if frame.pose is not None else None,
        ids=tuple(int(c.place_id) for c in cands),
        global_ids=tuple(int(c.place_id) for c in sorted(cands, key=lambda c: c.global_rank)),
        accepted=bool(msg.accepted), confidence=float(msg.confidence),
        mnn_score=float(top.rerank_score) if top is not None else math.nan,
        global_similarity=float(top.global_similarity) if top is not None else math.nan,
        reject_reason=str(msg.reject_reason),
        timings_ms={s.stage: float(s.ms) for s in msg.stages},
        latency_ms=latency_ms,
    )


class _Collector:
    """Subscriber side: results by header stamp, with their arrival time; node diagnostics."""

    def __init__(self, node: Any, result_topic: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from selavpr_msgs.msg import PlaceRecognition

        self._lock = threading.Lock()
        self.results: dict[int, tuple[Any, float]] = {}
        self.duplicates = 0
        self.diagnostics: dict[str, str] | None = None
        self.last_result = time.monotonic()
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(PlaceRecognition, result_topic, self._on_result, qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_result(self, msg: Any) -> None:
        now = time.monotonic()
        with self._lock:
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp in self.results:
                self.duplicates += 1
            self.results[stamp] = (msg, now)
            self.last_result = now

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "frames_dropped" in values and "frames_received" in values:
                with self._lock:
                    self.diagnostics = values

    def snapshot(self) -> tuple[int, dict[str, str] | None]:
        with self._lock:
            return len(self.results), self.diagnostics


_COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "bad_frames", "errors")


def _delta(now: dict[str, str] | None, base: dict[str, str] | None) -> dict[str, int] | None:
    if now is None:
        return None
    return {k: int(now.get(k, 0)) - int((base or {}).get(k, 0)) for k in _COUNTERS}


def _start_node(options: LiveOptions, image_type: str) -> tuple[subprocess.Popen[bytes], Path]:
    options.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = options.log_dir / "localizer_node.log"
    argv = [sys.executable, "-m", NODE_MODULE, "--ros-args",
            *node_parameters(options, image_type)]
    log.info("starting localizer_node (output in %s)", log_path)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log_path


def _stop_node(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_live(options: LiveOptions, frames: Sequence[Frame], progress: bool = True) -> LiveRun:
    """Replay ``frames`` (from the bag's image topic) to the node and collect its answers.

    Raises:
        LiveEvalError: the node did not come up (its log's last lines are in the message).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from selavpr_ros.ros.bag_player import BagPlayer, PlayOptions

    by_index = {int(f.source_ref): f for f in frames}
    if len(by_index) != len(frames):
        raise ConfigError("live evaluation needs bag frames (message indices as references)")
    stamps = [f.stamp_ns for f in frames]
    if len(set(stamps)) != len(stamps):
        log.warning("the bag's image topic repeats header stamps: answers are matched by "
                    "stamp, so repeated frames share one answer")
    proc = log_path = None
    context = rclpy.Context()
    rclpy.init(context=context, args=["selavpr"])
    node = rclpy.create_node("selavpr_evaluator", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    player = None
    try:
        collector = _Collector(node, options.result_topic)
        player = BagPlayer(node, options.bag, PlayOptions(
            rate=options.rate, topics=(options.image_topic,), wait_for=(options.image_topic,),
            reliability="reliable", wait_timeout_s=options.startup_timeout_s))
        if not options.node_running:
            compressed = player.topics[options.image_topic].endswith("CompressedImage")
            proc, log_path = _start_node(options, "compressed" if compressed else "raw")
        alive = (lambda: proc.poll() is None) if proc is not None else None
        ok = player.wait_for_subscribers([options.image_topic], options.startup_timeout_s,
                                         alive=alive)
        deadline = time.monotonic() + options.startup_timeout_s
        while ok and node.count_publishers(options.result_topic) == 0:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                ok = False
            time.sleep(0.02)
        if not ok:
            detail = f"; its last output:\n{_tail(log_path)}" if log_path else ""
            what = "the localizer_node it started" if proc is not None else "no localizer_node"
            raise LiveEvalError(
                f"{what} did not subscribe to {options.image_topic} and publish "
                f"{options.result_topic} within {options.startup_timeout_s:.0f} s{detail}")
        # the node's counters before the replay (an existing node has history)
        wait = time.monotonic() + 2.5
        while collector.snapshot()[1] is None and time.monotonic() < wait:
            time.sleep(0.05)
        base = collector.snapshot()[1]
        sent: dict[int, float] = {}

        def on_publish(_topic: str, index: int, _bag_ns: int, wall: float) -> None:
            sent[by_index[index].stamp_ns] = wall

        log.info("replaying %d frames of %s at x%g", len(frames), options.image_topic,
                 options.rate)
        start = time.monotonic()
        stats = player.play(select=lambda _t, i: i in by_index, on_publish=on_publish)
        _drain(collector, len(sent), base, options.drain_timeout_s)
        wall_s = time.monotonic() - start
        answered, diag = collector.snapshot()
        node_counts = _delta(diag, base)
    finally:
        if proc is not None:
            _stop_node(proc)
        if player is not None:
            player.close()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5.0)
    records = []
    processing = []
    for index, frame in enumerate(frames):
        got = collector.results.get(frame.stamp_ns)
        if got is None or frame.stamp_ns not in sent:
            reason = "not sent" if frame.stamp_ns not in sent else "no answer (dropped)"
            records.append(QueryRecord(
                index=index, stamp_ns=frame.stamp_ns, source_ref=frame.source_ref,
                frame_index=frame_index_of(frame.source_ref),
                position=frame.pose.position if frame.pose is not None else None,
                error=reason))
            continue
        msg, received = got
        records.append(record_from_message(frame, index, msg,
                                           (received - sent[frame.stamp_ns]) * 1e3))
        processing.append(float(msg.processing_ms))
    answered_sent = sum(1 for r in records if r.answered)
    info = {
        "rate": options.rate, "image_topic": options.image_topic,
        "node_started": proc is not None, "node_log": str(log_path) if log_path else None,
        "frames_sent": len(sent), "frames_answered": answered_sent,
        "frames_unanswered": len(sent) - answered_sent,
        "results_received": answered, "duplicate_stamps": collector.duplicates,
        "node_counters": node_counts,
        "node_processing_ms": lat.summarize(processing),
        "latency_definition": "publish of the frame to receipt of its PlaceRecognition, "
                              "measured in the evaluating process",
        "replay": {"wall_s": stats.wall_s, "bag_span_s": stats.bag_span_s,
                   "late": stats.late, "max_lag_ms": stats.max_lag_ms,
                   "clock_messages": stats.clock_messages},
    }
    return LiveRun(records, wall_s, info)


def _drain(collector: _Collector, sent: int, base: dict[str, str] | None,
           timeout_s: float) -> None:
    """Wait until the node has accounted for every sent frame (answered, dropped or failed).

    The node's diagnostics (1 Hz) say what it received, processed and dropped; a node without
    them is waited on until every frame is answered or 5 s pass without an answer.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answered, diag = collector.snapshot()
        d = _delta(diag, base)
        if d is None:
            if answered >= sent or time.monotonic() - collector.last_result > 5.0:
                return
        elif d["frames_received"] >= sent:
            done = (d["frames_processed"] + d["frames_dropped"] + d["bad_frames"]
                    + d["errors"])
            if done >= d["frames_received"] and answered >= d["frames_processed"]:
                return
        time.sleep(0.05)
    log.warning("stopped waiting for the node to account for every frame after %.0f s",
                timeout_s)


def compare(offline: Sequence[QueryRecord], live: Sequence[QueryRecord]) -> dict[str, Any]:
    """Frame-by-frame agreement of offline and live answers on the frames the node answered.

    Rankings are compared over the candidates the node listed; scores travel as float32 in
    the message, hence the reported maximum differences.
    """
    by_stamp = {r.stamp_ns: r for r in offline if r.answered}
    compared = same_ranking = same_decision = same_top1 = 0
    conf_diff = sim_diff = 0.0
    mismatches: list[dict[str, Any]] = []
    for r in live:
        o = by_stamp.get(r.stamp_ns)
        if not r.answered or o is None:
            continue
        compared += 1
        n = len(r.ids)
        # the global order is only comparable when the node listed every candidate
        ranking = tuple(o.ids[:n]) == r.ids and (n < len(o.ids) or o.global_ids == r.global_ids)
        decision = o.accepted == r.accepted
        top1 = bool(o.ids) and bool(r.ids) and o.ids[0] == r.ids[0]
        same_ranking += ranking
        same_decision += decision
        same_top1 += top1
        conf_diff = max(conf_diff, abs(o.confidence - r.confidence))
        if math.isfinite(o.global_similarity) and math.isfinite(r.global_similarity):
            sim_diff = max(sim_diff, abs(o.global_similarity - r.global_similarity))
        if not (ranking and decision) and len(mismatches) < 20:
            mismatches.append({"stamp_ns": r.stamp_ns, "source_ref": r.source_ref,
                               "offline_top": list(o.ids[:5]), "live_top": list(r.ids[:5]),
                               "offline_accepted": o.accepted, "live_accepted": r.accepted})
    return {"compared": compared, "same_ranking": same_ranking,
            "same_decision": same_decision, "same_top1": same_top1,
            "max_confidence_diff": conf_diff, "max_global_similarity_diff": sim_diff,
            "mismatches": mismatches}
