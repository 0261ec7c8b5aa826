"""Launch the live map builder: ros2 launch selavpr_ros map_builder.launch.py map:=/maps/x.selavpr

Arguments override the parameter file: map, checkpoint, image_topic, pose_topic, pose_type,
device. Call ``ros2 service call /map_builder_node/save std_srvs/srv/Trigger`` to commit.
"""

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
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="SelaVPR weights (.pth or .safetensors)"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw",
                              description="camera topic (Image, or CompressedImage)"),
        DeclareLaunchArgument("pose_topic", default_value="/odom", description="pose topic"),
        DeclareLaunchArgument("pose_type", default_value="odometry",
                              description="odometry, pose or pose_with_covariance"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu or cuda"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        Node(
            package="selavpr_ros",
            executable="map_builder_node",
            name="map_builder_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            parameters=[LaunchConfiguration("params_file"),
                        {"map_path": LaunchConfiguration("map"),
                         "checkpoint": LaunchConfiguration("checkpoint"),
                         "image_topic": LaunchConfiguration("image_topic"),
                         "pose_topic": LaunchConfiguration("pose_topic"),
                         "pose_type": LaunchConfiguration("pose_type"),
                         "device": LaunchConfiguration("device")}],
        ),
    ])
