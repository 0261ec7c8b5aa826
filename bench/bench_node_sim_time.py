"""localizer_node on a replayed bag with /clock: wall time vs sim time vs sim time + TF.

The synthetic revisit drive with depth (``selavpr make-revisit --depth``) is recorded at
``--rate`` Hz; its first pass becomes a classical map with depth. ``selavpr replay`` plays the
whole bag at recorded speed (and /clock at 50 Hz) against four node set-ups, one after the
other on this machine: ``use_sim_time`` false; true; true with ``base_frame`` and odometry in
TF but no ``publish_tf`` (the AMCL set-up: ``pose`` is what goes to /initialpose); true with
``base_frame`` + ``publish_tf``. The gate publishes every consistent estimate
(``relocalization_rate`` 0). This process listens as a robot's other nodes do
(``node_testlib.LiveConsumer``, as the live test does): it relays the bag's odometry to TF as
an odometry node would, and its TF buffer runs on sim time like Nav2's. Per set-up it prints
the answers, accepted PnP answers and published poses, the node's per-frame processing time
(image received -> answer sent, its own measurement in PlaceRecognition), the count and
largest gap of map -> odom, and how many ``map -> base_link`` lookups at the image stamps
succeed (from the first map -> odom on, and after each replay's first second).

    python bench/bench_node_sim_time.py --frames 60 --rate 10 --replays 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "test"))

import ros_harness  # noqa: E402
from node_testlib import LiveConsumer, revisit_bag_and_map, stamp_ns  # noqa: E402

NODE = "localizer_node"


def run_setup(name: str, params: list[str], bag: Path, place_map: Path, replays: int,
              log_dir: Path) -> dict[str, Any]:
    probe = ros_harness.RosProbe(f"bench_probe_{name.replace('+', '_').replace(' ', '_')}")
    consumer = LiveConsumer(probe)
    procs: list[ros_harness.NodeProcess] = []
    try:
        argv = [ros_harness.executable(NODE), "--ros-args", "-p", f"map_path:={place_map}",
                "-p", "image_topic:=/camera/image_raw", "-p", "min_margin:=0.0"]
        for p in params:
            argv += ["-p", p]
        node = ros_harness.NodeProcess(argv, log_dir / f"{name}_node.log")
        procs.append(node)
        node.wait_for_output(f"{NODE} started", timeout=120)
        probe.wait_for_subscribers("/camera/image_raw")
        lookups_ok, failures = 0, []
        for replay in range(replays):
            start = time.monotonic()
            before = consumer.counts()[0]
            player = ros_harness.NodeProcess(
                [ros_harness.executable("selavpr"), "replay", str(bag), "--wait-for",
                 "/camera/image_raw"], log_dir / f"{name}_replay{replay}.log")
            procs.append(player)
            assert player.proc.wait(timeout=600) == 0, player.output()
            time.sleep(2.0)  # the last answers
            print(f"  {name}: replay {replay + 1} took {time.monotonic() - start:.1f} s",
                  file=sys.stderr)
            if consumer.counts()[2]:  # map -> odom published: look up at the image stamps
                ok, failed = consumer.lookups(before)
                lookups_ok += ok
                failures += [f"replay {replay}: {f}"[:300] for f in failed]
        with consumer.lock:
            got, poses = list(consumer.answers), list(consumer.poses)
            arrivals = [arrival for arrival, _, _ in consumer.map_odom]
        processing = np.array([r.processing_ms for r in got]) if got else np.zeros(1)
        gaps = np.diff(arrivals) if len(arrivals) > 1 else np.zeros(1)
        # the gate's release ratio once converged: accepted PnP frames whose two predecessors
        # (consistent_frames 3) were accepted PnP too, and how many of them became a pose
        pnp = [r.accepted and r.pose_source == "pnp" for r in got]
        converged = {stamp_ns(r.header.stamp) for i, r in enumerate(got)
                     if i >= 2 and all(pnp[i - 2:i + 1])}
        released = len(converged & {stamp_ns(q.header.stamp) for q in poses})
        return {
            "setup": name, "answers": len(got),
            "accepted": sum(r.accepted for r in got),
            "pnp": sum(pnp),
            "poses": len(poses),
            "converged_pnp": len(converged), "converged_released": released,
            "processing_p50_ms": round(float(np.percentile(processing, 50)), 1),
            "processing_p90_ms": round(float(np.percentile(processing, 90)), 1),
            "map_odom_msgs": len(arrivals),
            "map_odom_max_gap_s": round(float(gaps.max()), 3),
            "lookups": lookups_ok + len(failures), "lookups_ok": lookups_ok,
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
            ("wall time", ["use_sim_time:=false", *gate]),
            ("sim time", ["use_sim_time:=true", *gate]),
            ("sim time + odometry tf", ["use_sim_time:=true", "base_frame:=base_link", *gate]),
            ("sim time + tf", ["use_sim_time:=true", "base_frame:=base_link",
                               "publish_tf:=true", "map_frame:=map", *gate]),
        ]
        logs = args.logs or root
        logs.mkdir(parents=True, exist_ok=True)
        rows = [run_setup(name, params, bag, place_map, args.replays, logs)
                for name, params in setups]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        for row in rows:
            print(" | ".join(f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
