"""Launch the live map builder: ros2 launch selavpr_ros map_builder.launch.py map:=/maps/x.selavpr"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(
        get_package_share_directory("selavpr_ros"), "config", "map_builder.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="parameter YAML of map_builder_node"),
        DeclareLaunchArgument("map", default_value="", description="map directory to write"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        Node(
            package="selavpr_ros",
            executable="map_builder_node",
            name="map_builder_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"map_path": LaunchConfiguration("map")}],
        ),
    ])
