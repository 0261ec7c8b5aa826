"""Launch the localizer node.

    ros2 launch selavpr_ros localizer.launch.py map:=/maps/campus.selavpr \
        checkpoint:=/weights/SelaVPR_msls.pth camera_topic:=/camera/image_raw

The launch arguments override the parameter file (params_file, default: the installed
config/localizer.yaml). Remap ``pose`` to ``/initialpose`` for re-localisation.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("selavpr_ros"), "config", "localizer.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameter YAML of localizer_node"),
        DeclareLaunchArgument("map", default_value="", description="place map directory"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="SelaVPR weights (.pth or .safetensors)"),
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="image topic (Image or CompressedImage)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        Node(
            package="selavpr_ros",
            executable="localizer_node",
            name="localizer_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[
                LaunchConfiguration("params_file"),
                {"map_path": LaunchConfiguration("map"),
                 "checkpoint": LaunchConfiguration("checkpoint"),
                 "image_topic": LaunchConfiguration("camera_topic")},
            ],
        ),
    ])
