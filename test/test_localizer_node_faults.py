"""localizer_node under faults: malformed maps, reloads under a frame stream, diagnostics.

The node runs as a separate process over DDS, as on a robot.
"""

from __future__ import annotations

import json
import shutil

import pytest

import ros_harness
from test_localizer_node import (
    NODE,
    latest_diagnostics,
    publish,
    sent_stamps,
    stamp_ns,
    start_localizer,
    warm_up,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(localizer_world):
    return localizer_world


def malformed_maps(good, root) -> dict[str, object]:
    """Make copies of a good map, each broken in one way a downloaded map could be."""
    maps = {}

    def copy(name):
        path = root / f"{name}.selavpr"
        shutil.copytree(good, path, ignore=shutil.ignore_patterns(".write.lock"))
        return path, json.loads((path / "manifest.json").read_text())

    path, manifest = copy("index_without_bytes")
    del manifest["index"]["file"]["bytes"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    maps["index entry without bytes"] = path
    path, manifest = copy("index_kind_mismatch")
    manifest["index"]["spec"]["kind"] = "ivfpq"  # the faiss file holds a flat index
    manifest["index"]["spec"]["nlist"] = 4
    (path / "manifest.json").write_text(json.dumps(manifest))
    maps["index kind not matching the faiss file"] = path
    path, _ = copy("deeply_nested")
    (path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    maps["manifest nested 100000 levels"] = path
    return maps


class Services:
    """Set parameters and call ~/reload_map of the node from the probe."""

    def __init__(self, probe, node=f"/{NODE}"):
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        self.set_params = probe.node.create_client(SetParameters, f"{node}/set_parameters")
        self.reload = probe.node.create_client(Trigger, f"{node}/reload_map")
        assert self.reload.wait_for_service(timeout_sec=30)

    @staticmethod
    def call(client, request, timeout=60):
        future = client.call_async(request)
        ros_harness.wait_until(future.done, timeout, f"{client.srv_name} response")
        return future.result()

    def reload_from(self, path):
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters
        from std_srvs.srv import Trigger

        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path))
        result = self.call(self.set_params, SetParameters.Request(
            parameters=[Parameter(name="map_path", value=value)]))
        assert result.results[0].successful
        return self.call(self.reload, Trigger.Request())


def test_the_node_keeps_answering_after_every_malformed_reload(world, ros_probe,
                                                               start_process, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray

    from selavpr_msgs.msg import PlaceRecognition

    ros_probe.subscribe(PlaceRecognition, "/place_recognition")
    ros_probe.subscribe(DiagnosticArray, "/diagnostics")
    node = start_localizer(start_process, world, "qos_reliability:=reliable")
    services = Services(ros_probe)
    files = world["files"]["a"]
    warm_up(start_process, ros_probe, "/cam/image_raw", files[0])
    malformed = malformed_maps(world["map_a"], tmp_path)
    for i, (case, path) in enumerate(malformed.items(), start=1):
        response = services.reload_from(path)
        assert not response.success, case
        assert f"keeping {world['map_a']}" in response.message, response.message
        assert "\n" not in response.message
        # still answering, from the old map
        publisher = publish(start_process, "/cam/image_raw", [files[i]], "--reliable")
        publisher.wait_for_output("done", timeout=60)
        stamp = sent_stamps(publisher)[-1]
        ros_harness.wait_until(lambda s=stamp: any(
            stamp_ns(m.header.stamp) == s for m in ros_probe.messages("/place_recognition")),
            60, f"an answer after the reload of '{case}'")
        answer = next(m for m in ros_probe.messages("/place_recognition")
                      if stamp_ns(m.header.stamp) == stamp)
        assert answer.accepted and answer.matched_place_id == i, case
        assert node.returncode is None, node.output()
    ros_harness.wait_until(
        lambda: latest_diagnostics(ros_probe).get("reload_failures") == str(len(malformed)),
        30, "the reload failures counted in diagnostics")
    assert "Traceback" not in node.output()
    assert node.output().count("reload failed") == len(malformed)


@pytest.mark.parametrize("case", ["index entry without bytes",
                                  "index kind not matching the faiss file",
                                  "manifest nested 100000 levels"])
def test_start_on_a_malformed_map_is_one_line_and_exit_1(case, world, start_process, tmp_path):
    path = malformed_maps(world["map_a"], tmp_path)[case]
    node = start_process([ros_harness.executable(NODE), "--ros-args",
                          "-p", f"map_path:={path}", "-p", f"checkpoint:={world['checkpoint']}"])
    ros_harness.wait_until(lambda: node.returncode is not None, 60, "the node to exit")
    assert node.returncode == 1, node.output()
    lines = [line for line in node.output().splitlines() if "cannot start" in line]
    assert len(lines) == 1, node.output()
    assert "Traceback" not in node.output()


def test_reloads_under_a_frame_stream_fail_no_frame(world, ros_probe, start_process):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from selavpr_msgs.msg import PlaceRecognition

    ros_probe.subscribe(PlaceRecognition, "/place_recognition")
    ros_probe.subscribe(DiagnosticArray, "/diagnostics")
    node = start_localizer(start_process, world, "qos_reliability:=reliable")
    services = Services(ros_probe)
    files = world["files"]["a"]
    warm_up(start_process, ros_probe, "/cam/image_raw", files[0])
    stream = publish(start_process, "/cam/image_raw", (files * 8)[:40], "--rate", "4",
                     "--reliable")
    reloads = 0
    while reloads < 25:
        response = services.reload_from(world["map_a"])
        assert response.success, response.message
        reloads += 1
    stream.wait_for_output("done", timeout=120)
    last = sent_stamps(stream)[-1]
    ros_harness.wait_until(lambda: any(stamp_ns(m.header.stamp) == last
                                       for m in ros_probe.messages("/place_recognition")),
                           60, "the answer to the last frame")
    answers = ros_probe.messages("/place_recognition")[1:]
    assert len(answers) >= 10  # frames dropped as stale are not failures; answered ones count
    assert all(m.accepted for m in answers)
    d = latest_diagnostics(ros_probe)
    assert d["errors"] == "0", d
    assert "frame failed" not in node.output()
    assert "is closed" not in node.output()

    def failures_ok() -> bool:
        for array in reversed(ros_probe.messages("/diagnostics")):
            for s in array.status:
                if s.name == f"{NODE}: failures":
                    return s.level == DiagnosticStatus.OK
        return False

    ros_harness.wait_until(failures_ok, 10, "the failures status at OK")


def test_diagnostics_follow_a_recent_window_and_say_stale(world, ros_probe, start_process):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    from selavpr_msgs.msg import PlaceRecognition

    ns_node = f"robot1/{NODE}"  # diagnostic names carry no leading slash
    ros_probe.subscribe(PlaceRecognition, "/robot1/place_recognition")
    ros_probe.subscribe(DiagnosticArray, "/diagnostics")
    argv = [ros_harness.executable(NODE), "--ros-args", "-r", "__ns:=/robot1",
            "-p", f"map_path:={world['map_a']}", "-p", f"checkpoint:={world['checkpoint']}",
            "-p", "image_topic:=/cam/image_raw", "-p", "stale_after_s:=2.0",
            "-p", "error_window_s:=4.0", "-p", "qos_reliability:=reliable"]
    node = start_process(argv)
    node.wait_for_output(f"{NODE} started", timeout=60)

    def level(concern: str):
        for array in reversed(ros_probe.messages("/diagnostics")):
            for s in array.status:
                if s.name == f"{ns_node}: {concern}":
                    return s
        return None

    ros_harness.wait_until(lambda: level("input") is not None, 30, "namespaced diagnostics")
    status = level("input")
    assert status.level == DiagnosticStatus.STALE, status.message  # no frame yet
    assert status.hardware_id not in ("", "cpu")  # the CPU's model name
    assert level("map and model").level == DiagnosticStatus.OK
    publisher = publish(start_process, "/cam/image_raw",
                        ["BAD:corrupt", world["files"]["a"][1]], "--rate", "2", "--reliable")
    publisher.wait_for_output("done", timeout=60)
    ros_probe.wait_for_messages("/robot1/place_recognition", count=1, timeout=60)
    ros_harness.wait_until(lambda: level("failures").level == DiagnosticStatus.WARN, 10,
                           "failures WARN right after a bad frame")
    assert level("input").level == DiagnosticStatus.OK
    # no frames for longer than stale_after_s and the bad frame older than the window
    ros_harness.wait_until(lambda: level("input").level == DiagnosticStatus.STALE, 15,
                           "input STALE when frames stop")
    ros_harness.wait_until(lambda: level("failures").level == DiagnosticStatus.OK, 15,
                           "failures back to OK once the bad frame left the window")
    d = latest_diagnostics(ros_probe, ns_node)
    assert d["bad_frames"] == "1"  # the cumulative count stays
    assert node.returncode is None
