"""The README's robot commands, run literally over DDS: ros2 launch, param, lifecycle.

These need the ROS 2 launch stack and the ``ros2`` command, which PyPI lacks; CI installs them
from ``../shared/vendor/ros2-jazzy`` (see .ci/run), and scripts/setup.sh registers selavpr_ros
in the venv's ament index. Without them the tests skip and say so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import ros_harness
from test_localizer_node import publish, sent_stamps, stamp_ns

pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.ros_tools]

VENDOR = ros_harness.REPO_ROOT.parent / "shared" / "vendor" / "ros2-jazzy"
ROS2 = Path(sys.executable).parent / "ros2"
SHARE = Path(sys.prefix) / "share" / "selavpr_ros"


@pytest.fixture(scope="module", autouse=True)
def ros2_cli():
    """Skip without the vendor tools; stop the ros2 daemon afterwards if any was started."""
    if not ROS2.exists():
        pytest.skip(f"the ros2 command is not installed: .ci/run installs it from {VENDOR} "
                    "when that folder is present (../shared/vendor/ros2-jazzy/install.sh .venv)")
    if not (SHARE / "launch").is_dir():
        pytest.skip("selavpr_ros is not registered in the venv's ament index: run "
                    "scripts/setup.sh")
    yield
    subprocess.run([str(ROS2), "daemon", "stop"], env=env(), capture_output=True, timeout=60)


def env() -> dict[str, str]:
    prefix = os.environ.get("AMENT_PREFIX_PATH", "")
    return {**os.environ, "AMENT_PREFIX_PATH": f"{sys.prefix}:{prefix}".rstrip(":")}


def ros2(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one ``ros2`` verb and return what it printed.

    Graph queries run with --no-daemon, so each discovers the graph afresh: a node that is
    running but not yet discovered ("Node not found") is asked again.
    """
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run([str(ROS2), *args], env=env(), capture_output=True, text=True,
                             timeout=timeout)
        if "not found" not in out.stderr or time.monotonic() > deadline:
            return out


def param_get(node: str, name: str) -> str:
    out = ros2("param", "get", "--no-daemon", "--hide-type", node, name)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


def launch(start_process, file: str, *args: str):
    return start_process([str(ROS2), "launch", "selavpr_ros", file, *args], env=env())


@pytest.fixture(scope="module")
def world(localizer_world):
    return localizer_world


def test_localizer_launch_defaults_params_file_namespace_and_overrides(
        world, start_process, tmp_path):
    # defaults: only the map and the weights given; the params file decides the rest
    node = launch(start_process, "localizer.launch.py", f"map:={world['map_a']}",
                  f"checkpoint:={world['checkpoint']}")
    node.wait_for_output("localizer_node started", timeout=90)
    assert param_get("/localizer_node", "map_path") == str(world["map_a"])
    assert param_get("/localizer_node", "image_topic") == "camera/image_raw"
    assert param_get("/localizer_node", "top_k") == "100"
    assert param_get("/localizer_node", "use_sim_time") == "False"
    assert node.stop() == 0, node.output()

    # a params file under a namespace, one argument overriding it, the rest from the file
    values = yaml.safe_load((SHARE / "config" / "localizer.yaml").read_text())
    values["/**"]["ros__parameters"].update(
        map_path=str(world["map_b"]), checkpoint=str(world["checkpoint"]), top_k=7,
        image_topic="/from_file/image_raw")
    params_file = tmp_path / "robot1.yaml"
    params_file.write_text(yaml.safe_dump(values))
    node = launch(start_process, "localizer.launch.py", f"params_file:={params_file}",
                  "namespace:=robot1", f"map:={world['map_a']}", "use_sim_time:=true",
                  "log_level:=debug")
    node.wait_for_output("localizer_node started", timeout=90)
    assert param_get("/robot1/localizer_node", "map_path") == str(world["map_a"])  # argument
    assert param_get("/robot1/localizer_node", "top_k") == "7"  # file
    assert param_get("/robot1/localizer_node", "image_topic") == "/from_file/image_raw"
    assert param_get("/robot1/localizer_node", "use_sim_time") == "True"
    assert "[DEBUG]" in node.output()
    assert node.stop() == 0, node.output()


def test_map_builder_launch_takes_the_same_argument_names(world, start_process, tmp_path):
    node = launch(start_process, "map_builder.launch.py", f"map:={tmp_path / 'new.selavpr'}",
                  f"checkpoint:={world['checkpoint']}", "namespace:=robot2",
                  "image_topic:=/cam2/image_raw", "pose_topic:=/robot2/odom")
    node.wait_for_output("map_builder_node started", timeout=90)
    node_name = "/robot2/map_builder_node"
    assert param_get(node_name, "image_topic") == "/cam2/image_raw"
    assert param_get(node_name, "pose_topic") == "/robot2/odom"
    assert param_get(node_name, "pose_type") == "odometry"  # from the shipped file
    assert param_get(node_name, "map_path") == str(tmp_path / "new.selavpr")
    assert node.stop() == 0, node.output()


def test_lifecycle_transitions_and_live_and_read_only_parameters(
        world, ros_probe, start_process, tmp_path):
    from selavpr_msgs.msg import PlaceRecognition

    broken = tmp_path / "broken.selavpr"
    broken.mkdir()
    (broken / "manifest.json").write_text("{")
    node = launch(start_process, "localizer.launch.py", f"map:={broken}",
                  f"checkpoint:={world['checkpoint']}", "image_topic:=/cam/image_raw",
                  "autostart:=false")
    node.wait_for_output("localizer_node started unconfigured", timeout=90)
    name = "/localizer_node"

    def state() -> str:
        out = ros2("lifecycle", "get", "--no-daemon", name)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout.split()[0]

    def transition(label: str) -> subprocess.CompletedProcess:
        return ros2("lifecycle", "set", "--no-daemon", name, label)

    assert state() == "unconfigured"
    failed = transition("configure")
    assert "Transitioning successful" not in failed.stdout, failed.stdout
    assert state() == "unconfigured"
    assert f"cannot open map '{broken}'" in node.output()
    assert node.returncode is None
    out = ros2("param", "set", "--no-daemon", name, "map_path", str(world["map_a"]))
    assert "successful" in out.stdout, out.stdout + out.stderr
    assert "Transitioning successful" in transition("configure").stdout
    assert state() == "inactive"
    assert "Transitioning successful" in transition("activate").stdout
    assert state() == "active"

    ros_probe.subscribe(PlaceRecognition, "/place_recognition")
    ros_probe.wait_for_publishers("/place_recognition")
    publisher = publish(start_process, "/cam/image_raw", [world["files"]["a"][2]], "--reliable")
    publisher.wait_for_output("done", timeout=60)
    answer = ros_probe.wait_for_messages("/place_recognition", timeout=60)[0]
    assert answer.matched_place_id == 2 and answer.accepted
    assert stamp_ns(answer.header.stamp) == sent_stamps(publisher)[0]

    # live: takes effect at the next frame
    out = ros2("param", "set", "--no-daemon", name, "min_margin", "1000000000.0")
    assert "successful" in out.stdout, out.stdout + out.stderr
    assert param_get(name, "min_margin") == "1000000000.0"
    publisher = publish(start_process, "/cam/image_raw", [world["files"]["a"][3]], "--reliable")
    publisher.wait_for_output("done", timeout=60)
    second = ros_probe.wait_for_messages("/place_recognition", count=2, timeout=60)[1]
    assert second.candidates[0].place_id == 3 and not second.accepted  # no such margin
    # refused with a reason: read-only, out of range, inconsistent with another parameter
    for param, value, reason in (("checkpoint", "/x.pth", "read-only"),
                                 ("image_topic", "/other", "read-only"),
                                 ("top_k", "0", "range"),
                                 ("rerank_k", "500", "rerank_k must be in")):
        out = ros2("param", "set", "--no-daemon", name, param, value)
        assert "successful" not in out.stdout.lower().replace("unsuccessful", ""), out.stdout
        assert reason in out.stdout + out.stderr, (param, out.stdout + out.stderr)
    assert param_get(name, "top_k") == "100"

    for label, expected in (("deactivate", "inactive"), ("cleanup", "unconfigured"),
                            ("shutdown", "finalized")):
        assert "Transitioning successful" in transition(label).stdout, label
        assert state() == expected
    assert "cleaned up: map and model released" in node.output()
    assert "Traceback" not in node.output()


def test_a_classical_map_launches_without_an_extractor_argument(ros_probe, start_process,
                                                               tmp_path):
    from selavpr_msgs.msg import PlaceRecognition
    from test_self_describing_map import build_classical_map

    path, files = build_classical_map(tmp_path)
    ros_probe.subscribe(PlaceRecognition, "/place_recognition")
    node = launch(start_process, "localizer.launch.py", f"map:={path}",
                  "image_topic:=/cam/image_raw")
    node.wait_for_output("localizer_node started", timeout=90)
    assert "classical-rootsift-vlad" in node.output()
    ros_probe.wait_for_publishers("/place_recognition")
    publisher = publish(start_process, "/cam/image_raw", [files[5]], "--reliable")
    publisher.wait_for_output("done", timeout=60)
    answer = ros_probe.wait_for_messages("/place_recognition", timeout=60)[0]
    assert answer.candidates[0].place_id == 5
    assert node.stop() == 0, node.output()
