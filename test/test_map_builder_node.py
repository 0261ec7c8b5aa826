"""The live map_builder_node over real DDS: same frames as a bag -> same map as build-map.

A publisher process replays a bag written in the test; the node (a separate process) pairs
images with odometry, selects keyframes, extracts and commits on ~/save and on shutdown. The
result is compared with the offline build of the same bag.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import numpy as np
import pytest

import ros_harness
from map_build_testlib import assert_fp16_close, make_checkpoint, write_drive_bag
from selavpr_ros.cli import main as cli
from selavpr_ros.map import PlaceMap

pytestmark = pytest.mark.ros

PUBLISHER = str(ros_harness.TEST_DIR / "bag_publisher.py")


def call_save(probe: ros_harness.RosProbe, timeout: float = 60.0):  # noqa: ANN201
    from std_srvs.srv import Trigger

    client = probe.node.create_client(Trigger, "/map_builder_node/save")
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(Trigger.Request())
    ros_harness.wait_until(future.done, timeout, "the ~/save response")
    return future.result()


def node_args(map_path: Path, checkpoint: Path | None, **extra: object) -> list[str]:
    params = {"map_path": str(map_path), "checkpoint": checkpoint,
              "qos_reliability": "reliable", "qos_depth": 500, "min_distance": 0.15,
              "min_rotation_deg": -1.0, "pose_tolerance": 0.05, "pose_wait": 30.0,
              "commit_every": 3, "batch_size": 4, **extra}
    args = [ros_harness.executable("map_builder_node"), "--ros-args", "--log-level",
            "map_builder_node:=debug"]
    for name, value in params.items():
        if value is not None and value != "None":
            args += ["-p", f"{name}:={value}"]
    return args


def test_live_map_equals_the_offline_build(tmp_path: Path, ros_probe, start_process) -> None:
    checkpoint = make_checkpoint(tmp_path / "tiny.safetensors")
    bag = tmp_path / "drive"
    stamps = write_drive_bag(bag, 16)
    assert cli(["build-map", str(tmp_path / "offline"), "--bag", str(bag), "--min-distance",
                "0.15", "--min-rotation", "off", "--pose-tolerance", "0.05",
                "--checkpoint", str(checkpoint), "--no-progress"]) == 0

    node = start_process(node_args(tmp_path / "live", checkpoint))
    node.wait_for_output("map_builder_node started")
    ros_probe.wait_for_subscribers("/camera/image_raw")
    ros_probe.wait_for_subscribers("/odom")
    resume = tmp_path / "resume"
    publisher = start_process([sys.executable, PUBLISHER, str(bag), "--pause-at",
                               str(stamps[8]), "--resume-file", str(resume)])
    publisher.wait_for_output("paused", timeout=60)
    node.wait_for_output(f"image {stamps[7]} queued", timeout=30)

    # ~/save commits the first half while the node keeps running (every image received
    # before the call, its pose waited for: reliable DDS may deliver it seconds later)
    response = call_save(ros_probe)
    assert response.success, response.message
    with PlaceMap.open(tmp_path / "live") as m:
        saved = m.count
    assert f"{saved} in total" in response.message and "images received 8" in response.message
    assert "refused 0" in response.message
    assert saved == 4  # images 0, 2, 4, 6 (image 7 is no keyframe)

    # the second half: committed by ~/save, then SIGTERM ends the node with its summary
    resume.touch()
    publisher.wait_for_output("done", timeout=60)
    node.wait_for_output(f"image {stamps[15]} queued", timeout=30)
    # ~/save waits for the images received before it whose poses are still on their way
    assert "8 in total" in call_save(ros_probe).message
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=60) == 0, node.output()
    assert "8 places added, 8 in total" in node.output()

    with PlaceMap.open(tmp_path / "offline", verify=True) as off, \
            PlaceMap.open(tmp_path / "live", verify=True) as live:
        assert live.count == off.count == 8
        assert live.map_frame == off.map_frame == "odom"
        a, b = off.places(range(8)), live.places(range(8))
        assert [p.stamp_ns for p in b] == [p.stamp_ns for p in a] == stamps[0:16:2]
        for pa, pb in zip(a, b, strict=True):
            assert np.allclose(pb.position, pa.position, atol=1e-12)
            assert np.allclose(pb.orientation, pa.orientation, atol=1e-12)
            assert pb.frame_id == pa.frame_id == "cam"
        fa, fb = off.features(range(8)), live.features(range(8))
        assert np.allclose(fb.global_desc, fa.global_desc, atol=1e-6)
        assert_fp16_close(fb.local, fa.local)  # equal up to fp16 rounding (other batch sizes)


def test_without_a_checkpoint_configure_fails_and_save_reports_why(
        tmp_path: Path, ros_probe, start_process) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    node = start_process(node_args(tmp_path / "live", None, autostart="false"))
    client = ros_probe.node.create_client(ChangeState, "/map_builder_node/change_state")
    assert client.wait_for_service(timeout_sec=30)
    future = client.call_async(ChangeState.Request(
        transition=Transition(id=Transition.TRANSITION_CONFIGURE)))
    ros_harness.wait_until(future.done, 60, "the configure response")
    assert not future.result().success
    node.wait_for_output("cannot build the map")
    response = call_save(ros_probe)
    assert not response.success and "checkpoint" in response.message
    assert node.returncode is None
    assert node.stop() == 0, node.output()
    assert not (tmp_path / "live").exists()


def test_without_a_checkpoint_autostart_refuses_in_one_line(tmp_path: Path,
                                                           start_process) -> None:
    node = start_process(node_args(tmp_path / "live", None))
    assert node.proc.wait(timeout=60) == 1
    assert node.output().count("cannot start") == 1, node.output()
    assert "checkpoint" in node.output() and "Traceback" not in node.output()


def test_bad_parameter_stops_the_node_with_one_line(tmp_path: Path, start_process) -> None:
    node = start_process(node_args(tmp_path / "live", "x.safetensors", pose_type="imu"))
    assert node.proc.wait(timeout=30) == 1
    assert "pose_type must be one of" in node.output()


def test_live_camera_info_and_depth_equal_the_offline_build(tmp_path: Path, ros_probe,
                                                            start_process) -> None:
    from selavpr_ros.synthetic import Camera, RouteConfig
    from selavpr_ros.synthetic.depth import camera_info, render_traversal_depth
    from selavpr_ros.synthetic.route import render_traversal, route_world
    from selavpr_ros.synthetic.writers import write_bag

    route = RouteConfig(seed=5, frames=6, spacing_m=2.0, camera=Camera(width=160, height=120))
    world = route_world(route)
    depths = list(render_traversal_depth(route, 0, world))
    depths[3] = depths[3].astype(np.float32)[:40]  # wrong size: logged, stored without points
    bag = tmp_path / "drive"
    write_bag(list(render_traversal(route, 0, world)), bag, depths=depths,
              camera_info=camera_info(route.camera))
    checkpoint = make_checkpoint(tmp_path / "tiny.safetensors")
    common = ["--image-topic", "/camera/image_raw", "--depth-topic", "/camera/depth/image_raw",
              "--min-distance", "0", "--checkpoint", str(checkpoint), "--no-progress"]
    assert cli(["build-map", str(tmp_path / "offline"), "--bag", str(bag), *common]) == 0
    node = start_process(node_args(tmp_path / "live", checkpoint, min_distance=0.0,
                                   depth_topic="/camera/depth/image_raw",
                                   pose_tolerance=0.01))
    node.wait_for_output("map_builder_node started")
    for topic in ("/camera/image_raw", "/odom", "/camera/depth/image_raw", "/camera/camera_info"):
        ros_probe.wait_for_subscribers(topic)
    publisher = start_process([sys.executable, PUBLISHER, str(bag)])
    publisher.wait_for_output("done", timeout=120)
    # A frame waits for its pose (pose_wait 30 s), and reliable DDS may re-send a pose seconds
    # after its image on a loaded machine: stop once ~/save reports every frame committed.
    ros_harness.wait_until(lambda: f"{route.frames} in total" in call_save(ros_probe).message,
                           90, "every frame committed")
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=120) == 0, node.output()
    assert node.output().count("stored without depth") == 1, node.output()
    with PlaceMap.open(tmp_path / "offline", verify=True) as off, \
            PlaceMap.open(tmp_path / "live", verify=True) as live:
        assert live.count == off.count == route.frames
        assert live.camera is not None and off.camera is not None
        assert live.camera.same_as(off.camera)
        a, b = off.points(range(off.count)), live.points(range(live.count))
        assert np.all(np.isnan(b[3])) and np.all(np.isnan(a[3]))
        # the same depth pixels at the same feature pixels: identical fp16 values
        assert np.array_equal(np.isnan(a), np.isnan(b))
        assert np.array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
        assert np.isfinite(b).mean() > 0.3
