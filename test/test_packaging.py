"""The package builds the standard ROS 2 way: colcon builds selavpr_msgs and selavpr_ros."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ros_harness

IGNORED = shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__",
                                 "*.egg-info", ".pytest_cache")


@pytest.mark.slow
def test_colcon_builds_both_packages_and_installs_the_executables(tmp_path: Path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.skip("colcon is not installed in this environment (requirements-dev.txt)")
    workspace = tmp_path / "ws"
    shutil.copytree(ros_harness.REPO_ROOT, workspace / "src" / "selavpr_ros", ignore=IGNORED)
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix)
    build = subprocess.run(
        [str(colcon), "build", "--base-paths", "src", "src/selavpr_ros/msg",
         "--event-handlers", "console_direct-"],
        cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "2 packages finished" in build.stdout + build.stderr

    install = workspace / "install"
    lib = install / "selavpr_ros" / "lib" / "selavpr_ros"
    for exe in ("localizer_node", "map_builder_node", "selavpr"):
        assert (lib / exe).is_file(), f"{exe} not installed where `ros2 run` looks"
    share = install / "selavpr_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "selavpr_ros").is_file()
    for name in ("localizer.launch.py", "map_builder.launch.py"):
        assert (share / "selavpr_ros" / "launch" / name).is_file()
    assert (share / "selavpr_ros" / "config" / "localizer.yaml").is_file()

    # The workspace's own setup script makes both packages usable (as on a robot); the
    # interpreter is this environment's, which holds the ROS Python libraries here.
    check = subprocess.run(
        ["bash", "-c", f". {install}/setup.bash && {lib}/selavpr --version && "
         f"{sys.executable} -c 'import selavpr_msgs.msg, selavpr_ros; "
         "print(selavpr_msgs.__file__); print(selavpr_ros.__file__)'"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    msgs_file, ros_file = check.stdout.strip().splitlines()[-2:]
    assert msgs_file.startswith(str(install / "selavpr_msgs"))
    assert ros_file.startswith(str(install / "selavpr_ros"))


def test_launch_files_use_installed_executables_and_parameter_files():
    setup_py = (ros_harness.REPO_ROOT / "setup.py").read_text()
    for launch_file in sorted((ros_harness.REPO_ROOT / "launch").glob("*.launch.py")):
        source = launch_file.read_text()
        compile(source, str(launch_file), "exec")
        assert "def generate_launch_description" in source
        executable, config = source.split('node_launch("')[1].split('"')[0:3:2]
        assert f"{executable} = " in setup_py, f"{launch_file.name}: unknown {executable}"
        assert (ros_harness.REPO_ROOT / "config" / config).is_file()
