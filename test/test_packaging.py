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
    for exe in ("localizer_node", "map_builder_node", "loop_closure_node", "selavpr"):
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


DEV_TOOLS = ("launch", "launch_ros", "tf2_ros_py")  # apt on a robot; ../shared/vendor in CI


def installed_ros_packages() -> set[str]:
    """ROS packages in this environment's ament index (selavpr_ros itself excepted)."""
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    if not index.is_dir():
        pytest.skip("no ament index in this environment: run scripts/setup.sh")
    return {p.name for p in index.iterdir()} - {"selavpr_ros"}


def imported_modules() -> set[str]:
    """Top-level modules imported by the package and its launch files (tf2_ros as its package)."""
    import ast

    imported = set()
    files = [*(ros_harness.REPO_ROOT / "selavpr_ros").rglob("*.py"),
             *(ros_harness.REPO_ROOT / "launch").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    if "tf2_ros" in imported:  # the Python tf2_ros module is the package tf2_ros_py
        imported.add("tf2_ros_py")
    return imported


def declared_exec_depends() -> set[str]:
    import re

    xml = (ros_harness.REPO_ROOT / "package.xml").read_text()
    assert "<exec_depend>cv_bridge" not in xml  # nothing imports it
    return set(re.findall(r"<exec_depend>([^<]+)</exec_depend>", xml))


def test_package_xml_declares_every_ros_package_the_code_imports():
    imported_ros = imported_modules() & installed_ros_packages()
    assert imported_ros <= declared_exec_depends(), imported_ros - declared_exec_depends()
    # the developer tools (launch files, TF) are declared whether installed here or not
    assert set(DEV_TOOLS) <= declared_exec_depends() & imported_modules()


@pytest.mark.ros_tools
def test_package_xml_declares_no_ros_package_the_code_does_not_import():
    installed = installed_ros_packages()
    missing = [tool for tool in DEV_TOOLS if tool not in installed]
    if missing:
        pytest.skip(f"the ROS 2 developer tools {missing} are not installed (apt on a robot; "
                    "../shared/vendor/ros2-jazzy/install.sh .venv in development)")
    declared = {d for d in declared_exec_depends() if not d.startswith("python3-")}
    assert declared <= imported_modules() & installed, declared - imported_modules()
