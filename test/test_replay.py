"""``selavpr replay``: a bag played onto real DDS, received by a separate process's node."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

import eval_testlib
import node_testlib
import ros_harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]

FRAMES = eval_testlib.PLACES + eval_testlib.NOVEL
BAG_START_NS = eval_testlib.START_NS - 10_000_000  # the first odometry message


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    images = node_testlib.place_images(eval_testlib.PLACES, seed=3)
    return eval_testlib.write_query_bag(tmp_path_factory.mktemp("replay") / "bag", images)


def stamp_ns(stamp) -> int:
    return stamp.sec * 10**9 + stamp.nanosec


def replay(start_process, bag, *flags):
    return start_process([ros_harness.executable("selavpr"), "replay", str(bag), *flags])


def test_replay_plays_every_message_with_its_timing_and_clock(bag, ros_probe, start_process):
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    arrivals: list[float] = []
    ros_probe.subscribe(Odometry, "/odom", 100)
    ros_probe.subscribe(Clock, "/clock", 100)
    ros_probe.node.create_subscription(
        Image, eval_testlib.IMAGE_TOPIC, lambda m: arrivals.append(time.monotonic()), 100)
    ros_probe.subscribe(Image, eval_testlib.IMAGE_TOPIC, 100)
    player = replay(start_process, bag, "--rate", "2", "--topics", eval_testlib.IMAGE_TOPIC,
                    "/odom")
    images = ros_probe.wait_for_messages(eval_testlib.IMAGE_TOPIC, FRAMES, timeout=60)
    odom = ros_probe.wait_for_messages("/odom", 2 * FRAMES, timeout=60)
    ros_harness.wait_until(lambda: player.returncode is not None, 30, "replay to finish")
    assert player.returncode == 0, player.output()
    assert f"published {3 * FRAMES} messages" in player.output()

    # the recorded messages, unchanged and in order
    expected = [eval_testlib.START_NS + i * eval_testlib.PERIOD_NS for i in range(FRAMES)]
    assert [stamp_ns(m.header.stamp) for m in images] == expected
    first = node_testlib.place_images(1, seed=3)[0]
    assert np.array_equal(np.frombuffer(bytes(images[0].data), np.uint8).reshape(first.shape),
                          first)
    assert [m.pose.pose.position.x for m in odom[::2]] == [
        eval_testlib.query_position(i)[0] for i in range(FRAMES)]

    # recorded timing at x2: frames 100 ms apart arrive ~50 ms apart (after the first, which
    # the player confirms before it plays on)
    span = arrivals[-1] - arrivals[1]
    assert 0.8 * 0.4 <= span <= 0.4 + 0.4, span
    assert np.median(np.diff(arrivals)) == pytest.approx(0.05, abs=0.025)

    # /clock carries the bag time, never goes back, and ends at the last message
    clock = [stamp_ns(m.clock) for m in ros_probe.wait_for_messages("/clock", 3 * FRAMES)]
    assert clock == sorted(clock)
    assert clock[0] == BAG_START_NS
    ros_harness.wait_until(lambda: stamp_ns(ros_probe.messages("/clock")[-1].clock)
                           == expected[-1] + 10_000_000, 10, "the last /clock")
    assert len(ros_probe.messages("/clock")) > 3 * FRAMES  # also ticks between messages


def test_replay_filters_topics_and_lists_the_bag(bag, ros_probe, start_process):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image

    ros_probe.subscribe(Odometry, "/odom", 100)
    ros_probe.subscribe(Image, eval_testlib.IMAGE_TOPIC, 100)
    player = replay(start_process, bag, "--rate", "4", "--topics", "/odom", "--no-clock")
    # The filter is what this test checks (full delivery is the test above): the played topic
    # arrives, the other one never does, and the player counts only the played topic.
    ros_probe.wait_for_messages("/odom", 1, timeout=60)
    ros_harness.wait_until(lambda: player.returncode is not None, 60, "replay to finish")
    assert player.returncode == 0, player.output()
    assert f"  /odom: {2 * FRAMES}" in player.output()
    assert eval_testlib.IMAGE_TOPIC not in player.output().split("published", 1)[1]
    assert ros_probe.messages(eval_testlib.IMAGE_TOPIC) == []
    assert ros_probe.node.count_publishers("/clock") == 0

    listing = replay(start_process, bag, "--list")
    ros_harness.wait_until(lambda: listing.returncode is not None, 30, "--list")
    assert f"{eval_testlib.IMAGE_TOPIC}  sensor_msgs/msg/Image  {FRAMES}" in listing.output()
    missing = replay(start_process, bag, "--topics", "/nope")
    ros_harness.wait_until(lambda: missing.returncode is not None, 30, "a failed replay")
    assert missing.returncode == 2 and "has no topic /nope" in missing.output()
    assert "Traceback" not in missing.output()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_replay_in_one_line(bag, ros_probe, start_process, signum):
    from rosgraph_msgs.msg import Clock

    ros_probe.subscribe(Clock, "/clock", 100)
    player = replay(start_process, bag, "--rate", "0.2", "--wait-for")  # slow: still playing
    ros_probe.wait_for_messages("/clock", 3, timeout=60)
    player.proc.send_signal(signum)
    assert player.proc.wait(timeout=30) == 130, player.output()
    assert "replay: interrupted after" in player.output()
    assert "Traceback" not in player.output() and "RCLError" not in player.output()
