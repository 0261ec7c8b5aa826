"""The installed executables: the selavpr CLI and the two nodes as real processes over DDS."""

from __future__ import annotations

import re
import subprocess

import pytest

import ros_harness

PACKAGE_XML = ros_harness.REPO_ROOT / "package.xml"


def package_version() -> str:
    return re.search(r"<version>([^<]+)</version>", PACKAGE_XML.read_text()).group(1)


def test_cli_version_matches_package_xml():
    out = subprocess.run([ros_harness.executable("selavpr"), "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"selavpr_ros {package_version()}"


def test_cli_help_exits_zero_and_names_the_program():
    result = subprocess.run([ros_harness.executable("selavpr"), "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: selavpr")


def test_cli_rejects_unknown_command():
    result = subprocess.run([ros_harness.executable("selavpr"), "no-such-command"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.ros
@pytest.mark.parametrize("node_name, params_file", [
    ("map_builder_node", "map_builder.yaml"),
])
def test_node_starts_with_its_parameter_file_and_stops_cleanly(
        node_name, params_file, tmp_path, ros_probe, start_process):
    # A copy of the shipped parameter file with a recognisable map path proves that the
    # node reads the file rcl parses (the same way `ros2 launch` passes it).
    params = (ros_harness.REPO_ROOT / "config" / params_file).read_text()
    marker = str(tmp_path / "marker.selavpr")
    params = params.replace('map_path: ""', f'map_path: "{marker}"', 1)
    assert marker in params
    # no checkpoint: with autostart the node would refuse to start; unconfigured it runs
    params = params.replace("autostart: true", "autostart: false", 1)
    assert "autostart: false" in params
    (tmp_path / params_file).write_text(params)

    node = start_process([ros_harness.executable(node_name), "--ros-args",
                          "--params-file", str(tmp_path / params_file)])
    ros_probe.wait_for_node(node_name)
    node.wait_for_output(f"{node_name} started")
    assert node.returncode is None, node.output()
    assert node.stop() == 0, node.output()
