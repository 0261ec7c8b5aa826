"""localizer_node on a replayed bag with /clock: wall time vs sim time vs sim time + TF.

The synthetic revisit drive with depth (``selavpr make-revisit --depth``) is recorded at
``--rate`` Hz; its first pass becomes a classical map with depth. ``selavpr replay`` plays the
whole bag at recorded speed (and /clock at 50 Hz) against three node set-ups, one after the
other on this machine: ``use_sim_time`` false, true, and true with ``base_frame`` +
``publish_tf``, where this process relays the bag's odometry to TF (odom -> base_link, and
base_link -> camera as a static transform) as a robot's odometry node would; and the AMCL
set-up between them (odometry in TF, ``base_frame``, no ``publish_tf``: ``pose`` is what goes
to /initialpose). The gate publishes every consistent estimate (``relocalization_rate`` 0).
Per set-up it prints the answers, accepted PnP answers and published poses, the node's
per-frame processing time (image received -> answer sent, its own measurement in
PlaceRecognition), the count and largest gap of map -> odom, and how many ``map -> base_link``
lookups at the image stamps succeed in this process (from the first map -> odom on,
and after each replay's first second).

    python bench/bench_node_sim_time.py --frames 60 --rate 10 --replays 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

import ros_harness  # noqa: E402
from node_testlib import OdometryTf, revisit_bag_and_map  # noqa: E402

NODE = "localizer_node"


def stamp_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)


def run_setup(name: str, params: list[str], bag: Path, place_map: Path, replays: int,
              log_dir: Path, with_tf: bool) -> dict[str, Any]:
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.time import Time
    from tf2_msgs.msg import TFMessage

    from selavpr_msgs.msg import PlaceRecognition

    probe = ros_harness.RosProbe(f"bench_probe_{name.replace('+', '_').replace(' ', '_')}")
    procs: list[ros_harness.NodeProcess] = []
    results: list[Any] = []
    poses: list[Any] = []
    map_odom: list[tuple[float, int]] = []  # (wall arrival, stamp) of each map -> odom
    lock = threading.Lock()

    def on_result(msg: Any) -> None:
        with lock:
            results.append(msg)

    def on_tf(msg: Any) -> None:
        for t in msg.transforms:
            if t.header.frame_id == "map" and t.child_frame_id == "odom":
                with lock:
                    map_odom.append((time.monotonic(),
                                     t.header.stamp.sec * 10**9 + t.header.stamp.nanosec))

    probe.node.create_subscription(PlaceRecognition, "/place_recognition", on_result, 100)
    probe.node.create_subscription(PoseWithCovarianceStamped, "/pose", poses.append, 100)
    probe.node.create_subscription(TFMessage, "/tf", on_tf, 100)
    buffer = None
    if with_tf:
        import tf2_ros
        from rclpy.parameter import Parameter

        OdometryTf(probe.node)
        # a consumer the way Nav2 runs under sim time: its buffer is cleared when /clock jumps
        probe.node.set_parameters([Parameter("use_sim_time", Parameter.Type.BOOL, True)])
        from rclpy.duration import Duration

        # looked up after each replay: keep all of it (a consumer looks up as data comes)
        buffer = tf2_ros.Buffer(cache_time=Duration(seconds=600), node=probe.node)
        tf2_ros.TransformListener(buffer, probe.node)
    try:
        argv = [ros_harness.executable(NODE), "--ros-args", "-p", f"map_path:={place_map}",
                "-p", "image_topic:=/camera/image_raw", "-p", "min_margin:=0.0"]
        for p in params:
            argv += ["-p", p]
        node = ros_harness.NodeProcess(argv, log_dir / f"{name}_node.log")
        procs.append(node)
        node.wait_for_output(f"{NODE} started", timeout=120)
        probe.wait_for_subscribers("/camera/image_raw")
        lookups = ok = 0
        failures: list[str] = []
        for replay in range(replays):
            start = time.monotonic()
            with lock:
                before, tf_before = len(results), len(map_odom)
            player = ros_harness.NodeProcess(
                [ros_harness.executable("selavpr"), "replay", str(bag), "--wait-for",
                 "/camera/image_raw"], log_dir / f"{name}_replay{replay}.log")
            procs.append(player)
            assert player.proc.wait(timeout=600) == 0, player.output()
            time.sleep(2.0)  # the last answers
            print(f"  {name}: replay {replay + 1} took {time.monotonic() - start:.1f} s",
                  file=sys.stderr)
            if buffer is not None:  # lookups at the image stamps once map -> odom is known
                with lock:
                    stamps = [r.header.stamp for r in results[before:]]
                    samples = [stamp for _, stamp in map_odom[tf_before:]]
                first_image = min((st.sec * 10**9 + st.nanosec for st in stamps), default=0)
                known = min((st for st in samples if st >= first_image), default=None)
                if known is not None:  # this process's buffer is cleared by its own /clock
                    known = max(known, first_image + 10**9)  # jump: skip the first second
                for stamp in stamps:
                    if known is not None and stamp.sec * 10**9 + stamp.nanosec >= known:
                        lookups += 1
                        try:
                            buffer.lookup_transform("map", "base_link", Time.from_msg(stamp))
                            ok += 1
                        except Exception as err:  # noqa: BLE001 - tf2's several types
                            failures.append(f"replay {replay} known {known}: {err}"[:300])
        with lock:
            got, arrivals = list(results), [arrival for arrival, _ in map_odom]
        processing = np.array([r.processing_ms for r in got]) if got else np.zeros(1)
        gaps = np.diff(arrivals) if len(arrivals) > 1 else np.zeros(1)
        # the gate's release ratio once converged: accepted PnP frames whose two predecessors
        # (consistent_frames 3) were accepted PnP too, and how many of them became a pose
        pnp = [r.accepted and r.pose_source == "pnp" for r in got]
        converged = {stamp_of(r) for i, r in enumerate(got) if i >= 2 and all(pnp[i - 2:i + 1])}
        released = len(converged & {stamp_of(q) for q in poses})
        return {
            "setup": name, "answers": len(got),
            "accepted": sum(r.accepted for r in got),
            "pnp": sum(r.accepted and r.pose_source == "pnp" for r in got),
            "poses": len(poses),
            "converged_pnp": len(converged), "converged_released": released,
            "processing_p50_ms": round(float(np.percentile(processing, 50)), 1),
            "processing_p90_ms": round(float(np.percentile(processing, 90)), 1),
            "map_odom_msgs": len(arrivals),
            "map_odom_max_gap_s": round(float(gaps.max()), 3),
            "lookups": lookups, "lookups_ok": ok,
            "failed_lookups": failures,
        }
    finally:
        for proc in procs:
            proc.stop()
        probe.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per pass")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--replays", type=int, default=2, help="replays per set-up")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ros_harness.apply_isolated_dds_env()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bag, place_map = revisit_bag_and_map(root, args.frames, args.rate)
        gate = ["relocalization_rate:=0.0"]  # every consistent estimate becomes a pose
        setups = [
            ("wall time", ["use_sim_time:=false", *gate], False),
            ("sim time", ["use_sim_time:=true", *gate], False),
            ("sim time + odometry tf", ["use_sim_time:=true", "base_frame:=base_link", *gate],
             True),
            ("sim time + tf", ["use_sim_time:=true", "base_frame:=base_link",
                               "publish_tf:=true", "map_frame:=map", *gate], True),
        ]
        logs = args.logs or root
        logs.mkdir(parents=True, exist_ok=True)
        rows = [run_setup(name, params, bag, place_map, args.replays, logs, tf)
                for name, params, tf in setups]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(" | ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
