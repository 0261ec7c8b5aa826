"""The localizer the way a robot runs it: ``ros2 launch``, sim time, TF from odometry, a bag twice.

``selavpr replay`` plays the synthetic revisit drive (camera, camera info, depth, odometry)
with /clock; this process relays the odometry to TF as a robot's odometry node would and
listens as a consumer under sim time does (Nav2): its TF buffer is cleared when /clock jumps
back. The node runs under ``ros2 launch`` with ``use_sim_time``, ``base_frame`` and
``publish_tf``; the bag is played twice in the node's one life.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import ros_harness
from node_testlib import LiveConsumer, revisit_bag_and_map

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.ros_tools]

ROS2 = Path(sys.executable).parent / "ros2"
SHARE = Path(sys.prefix) / "share" / "selavpr_ros"
TOLERANCE_S = 0.5


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    if not ROS2.exists():
        pytest.skip("the ros2 command is not installed (../shared/vendor/ros2-jazzy/install.sh "
                    ".venv in development, apt on a robot)")
    pytest.importorskip("tf2_ros", reason="tf2_ros is absent (../shared/vendor/ros2-jazzy or "
                        "apt ros-jazzy-tf2-ros)")
    return revisit_bag_and_map(tmp_path_factory.mktemp("live"), frames=16, rate=5.0)


def test_sim_time_tf_and_a_bag_replayed_twice_under_ros2_launch(drive, ros_probe, start_process,
                                                                  tmp_path):
    import os

    bag, place_map = drive
    consumer = LiveConsumer(ros_probe)
    values = yaml.safe_load((SHARE / "config" / "localizer.yaml").read_text())
    values["/**"]["ros__parameters"].update(
        base_frame="base_link", publish_tf=True, map_frame="map", min_margin=0.0,
        consistent_frames=2, transform_tolerance=TOLERANCE_S, stale_after_s=1.0,
        qos_reliability="reliable", qos_depth=1)
    params = tmp_path / "robot.yaml"
    params.write_text(yaml.safe_dump(values))
    prefix = os.environ.get("AMENT_PREFIX_PATH", "")
    env = {**os.environ, "AMENT_PREFIX_PATH": f"{sys.prefix}:{prefix}".rstrip(":")}
    node = start_process([str(ROS2), "launch", "selavpr_ros", "localizer.launch.py",
                          f"params_file:={params}", f"map:={place_map}", "use_sim_time:=true"],
                         env=env)
    node.wait_for_output("localizer_node started", timeout=120)
    ros_probe.wait_for_subscribers("/camera/image_raw")

    per_replay = []
    for _ in range(2):
        answers_before, poses_before, _ = consumer.counts()
        player = start_process([ros_harness.executable("selavpr"), "replay", str(bag),
                                "--wait-for", "/camera/image_raw"])
        assert player.proc.wait(timeout=300) == 0, player.output()
        wanted = answers_before + 3
        ros_harness.wait_until(lambda wanted=wanted: consumer.counts()[0] > wanted, 60,
                               "answers to the replay")
        time.sleep(1.5)  # the last frames' answers
        answers, poses, _ = consumer.counts()
        ok, failed = consumer.lookups(answers_before)
        per_replay.append((answers - answers_before, poses - poses_before, ok, failed))

    for replay, (answers, poses, ok, failed) in enumerate(per_replay):
        assert answers >= 5, per_replay  # both replays answered, TF not broken by the second
        assert poses >= 1, per_replay  # the gate lets the driving robot through
        assert ok >= 3 and len(failed) <= max(1, ok // 10), (replay, failed)
    with consumer.lock:
        accepted_pnp = [a for a in consumer.answers if a.accepted and a.pose_source == "pnp"]
        samples = list(consumer.map_odom)
    assert len(accepted_pnp) >= 8
    # post-dated: each broadcast is stamped now and transform_tolerance ahead of /clock, so
    # the upper half of (stamp - clock at arrival) is the tolerance (a percentile: a sample
    # crossing a /clock jump back, or a late clock here, must not decide)
    ahead = [(stamp - clock) / 1e9 for _, stamp, clock in samples if clock]
    assert float(np.percentile(ahead, 75)) == pytest.approx(TOLERANCE_S, abs=0.2)
    assert float(np.percentile(ahead, 25)) == pytest.approx(0.0, abs=0.2)

    # /clock stopped with the bag: map -> odom goes on (steady timer), diagnostics say STALE
    ended = time.monotonic()
    time.sleep(2.5)
    with consumer.lock:
        after = [a for a, _, _ in consumer.map_odom if a > ended]
        diagnostics = [levels for t, levels in consumer.diagnostics if t > ended + 1.5]
    assert len(after) >= 10, "map -> odom stopped with /clock"
    assert diagnostics, "diagnostics stopped with /clock"
    assert diagnostics[-1]["localizer_node: input"] == 3  # STALE
    assert node.stop() == 0, node.output()
    assert "Traceback" not in node.output()
