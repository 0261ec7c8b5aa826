"""End-to-end latency of ``localizer_node`` over DDS: image published -> PlaceRecognition back.

A SMALL RANDOM MODEL (one-block ViT-S at 112x112, as in the node tests) and a map of its own
frames: this measures the pipeline's overhead (DDS transport of 640x480 rgb8 frames, decoding,
the node's frame slot, map search, re-ranking of 29x29 features, publishing), not ViT-L
extraction; add the extraction figures of the other sections for the full model. Frames are
sent at fixed rates from this process; latency = arrival of the answer (matched by the header
stamp) - publish time, both on this process's wall clock. Frames the node skipped (its slot
keeps only the newest) are counted as dropped. DDS is isolated: loopback, a random domain.

    python bench/bench_node.py --rates 10 30 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

import node_testlib  # noqa: E402
import ros_harness  # noqa: E402
from map_build_testlib import make_checkpoint  # noqa: E402

NODE = "localizer_node"
TICKS = __import__("os").sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _warm_up(send: Callable[[int], int], arrivals: dict[int, int], lock: threading.Lock,
             timeout_s: float = 120.0) -> None:
    """Send frames until three are answered: the first queries load lazily and are slow."""
    warm: list[int] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        warm.append(send(len(warm)))
        time.sleep(0.5)
        with lock:
            if sum(s in arrivals for s in warm) >= 3:
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per rate")
    parser.add_argument("--places", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], help="frame H W")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ros_harness.apply_isolated_dds_env(tmp / "ros_log")
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from selavpr_msgs.msg import PlaceRecognition
        from selavpr_ros.io.images import encode_raw

        checkpoint = make_checkpoint(tmp / "small.safetensors")
        images = node_testlib.place_images(args.places, seed=1, size=tuple(args.size))
        map_path = node_testlib.build_map(tmp / "bench.selavpr", checkpoint, images)
        node = ros_harness.NodeProcess(
            [ros_harness.executable(NODE), "--ros-args", "-p", f"map_path:={map_path}",
             "-p", f"checkpoint:={checkpoint}", "-p", "image_topic:=/bench/image_raw",
             "-p", f"top_k:={min(100, args.places)}", "-p", f"device:={args.device}",
             "-p", f"precision:={args.precision}"],
            tmp / "node.log", env=ros_harness.isolated_dds_env(tmp / "ros_log"))
        probe = ros_harness.RosProbe("selavpr_bench_probe")
        arrivals: dict[int, int] = {}
        lock = threading.Lock()

        def on_result(msg: PlaceRecognition) -> None:
            now = time.time_ns()
            with lock:
                arrivals[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = now

        probe.node.create_subscription(PlaceRecognition, "/place_recognition", on_result, 100)
        probe.subscribe(DiagnosticArray, "/diagnostics")
        pub = probe.node.create_publisher(
            Image, "/bench/image_raw",
            QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        frames = []
        for rgb in images:
            data, step = encode_raw(rgb, "rgb8")
            frames.append(Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                                step=step, data=data))

        def send(i: int) -> int:
            msg = frames[i % len(frames)]
            stamp = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            msg.header.frame_id = "bench_camera"
            pub.publish(msg)
            return stamp

        def diagnostics() -> dict[str, str]:
            for array in reversed(probe.messages("/diagnostics")):
                for status in array.status:
                    if status.name.startswith(NODE):
                        return {kv.key: kv.value for kv in status.values}
            return {}

        rows = []
        try:
            node.wait_for_output(f"{NODE} started", timeout=120)
            probe.wait_for_subscribers("/bench/image_raw", timeout=60)
            _warm_up(send, arrivals, lock)
            for rate in args.rates:
                count = max(1, int(rate * args.seconds))
                before = diagnostics()
                cpu_before, wall_before = cpu_seconds(node.proc.pid), time.perf_counter()
                sent = []
                start = time.perf_counter()
                for i in range(count):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    sent.append(send(i))
                time.sleep(2.0)  # answers still in flight
                time.sleep(1.2)  # the node's next diagnostics (1 Hz)
                after = diagnostics()
                node_cpu = cpu_seconds(node.proc.pid) - cpu_before
                node_wall = time.perf_counter() - wall_before
                with lock:
                    lat = [(arrivals[s] - s) / 1e6 for s in sent if s in arrivals]
                row = {"rate_hz": rate, "sent": count, "answered": len(lat),
                       "dropped": count - len(lat)}
                if lat:
                    row.update({f"p{q}_ms": float(np.percentile(lat, q)) for q in (50, 95, 99)})
                    row["max_ms"] = float(max(lat))
                for key in ("frames_dropped", "frames_received", "frames_processed"):
                    if key in before and key in after:
                        row[f"node_{key}"] = int(after[key]) - int(before[key])
                row["node_latency_p50_ms"] = after.get("latency_p50_ms")
                # percent of one core, over the sending window and the wait for answers
                row["node_cpu_percent"] = round(100.0 * node_cpu / node_wall, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            probe.close()
            node.stop()
    print(json.dumps({"bench": "node", "model": "vits14 depth 1 @112 px, RANDOM (pipeline "
                      "overhead only)", "device": args.device, "precision": args.precision,
                      "places": args.places, "frame_hw": args.size, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
