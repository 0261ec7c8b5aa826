"""Launch the live map builder (managed; autostart by default).

    ros2 launch selavpr_ros map_builder.launch.py map:=/maps/x.selavpr \
        checkpoint:=/weights/SelaVPR_msls.pth image_topic:=/camera/image_raw pose_topic:=/odom

Arguments (each overrides params_file only when given): the localizer's (map, checkpoint,
extractor, device, image_topic, autostart, use_sim_time) plus pose_topic and pose_type; also
params_file (default: the installed config/map_builder.yaml, keyed ``/**:``), namespace,
node_name, log_level. Commit with ``ros2 service call /map_builder_node/save
std_srvs/srv/Trigger`` (the map is also committed on deactivate and at shutdown).
"""

from launch import LaunchDescription
from selavpr_ros.ros.launch import node_launch


def generate_launch_description() -> LaunchDescription:
    return node_launch("map_builder_node", "map_builder.yaml", {
        "pose_topic": ("pose_topic", "pose topic"),
        "pose_type": ("pose_type", "odometry, pose or pose_with_covariance"),
    })
