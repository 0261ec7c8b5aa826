"""What both launch files share: arguments that override the parameter file only when given.

A launch argument left at its empty default passes nothing, so the parameter file (keyed
``/**:``, so it applies under any namespace and node name) decides; one given on the command
line overrides it. Both files take the same names for the same things.
"""

from __future__ import annotations

import os
from typing import Any

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch_ros.actions import Node

# launch argument -> (node parameter, description); all default to "" = "as in params_file"
COMMON_OVERRIDES: dict[str, tuple[str, str]] = {
    "map": ("map_path", "place map directory"),
    "checkpoint": ("checkpoint", "SelaVPR weights (.pth or .safetensors)"),
    "extractor": ("extractor", "selavpr or classical (default: the one recorded in the map)"),
    "device": ("device", "cpu, cuda or cuda:N"),
    "image_topic": ("image_topic", "camera topic (Image, or CompressedImage if it ends in "
                                   "/compressed)"),
    "autostart": ("autostart", "configure and activate at start: true or false"),
    "use_sim_time": ("use_sim_time", "use /clock (true when replaying a bag with --clock)"),
}
BOOLEAN = {"autostart", "use_sim_time"}


def _value(name: str, text: str) -> Any:
    if name in BOOLEAN:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {name} must be true or false, got '{text}'")
        return text.lower() == "true"
    return text


def node_launch(executable: str, config: str,
                extra: dict[str, tuple[str, str]] | None = None) -> LaunchDescription:
    """Launch ``executable`` with ``config/<config>`` and the override arguments."""
    overrides = {**COMMON_OVERRIDES, **(extra or {})}
    default_params = os.path.join(get_package_share_directory("selavpr_ros"), "config", config)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description=f"parameter YAML of {executable}"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("node_name", default_value=executable, description="node name"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="debug, info, warn, error or fatal"),
    ]
    arguments += [DeclareLaunchArgument(arg, default_value="",
                                        description=f"{text}; empty: as in params_file")
                  for arg, (_, text) in overrides.items()]

    def make_node(context: LaunchContext) -> list[Node]:
        given = {param: _value(arg, context.launch_configurations[arg])
                 for arg, (param, _) in overrides.items()
                 if context.launch_configurations.get(arg, "")}
        get = context.launch_configurations.__getitem__
        return [Node(
            package="selavpr_ros", executable=executable, name=get("node_name"),
            namespace=get("namespace"), output="screen",
            parameters=[get("params_file"), given],
            ros_arguments=["--log-level", get("log_level")],
        )]

    return LaunchDescription([*arguments, OpaqueFunction(function=make_node)])
