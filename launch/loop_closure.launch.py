"""Launch the loop-closure node (managed; autostart by default).

    ros2 launch selavpr_ros loop_closure.launch.py prior_map:=/maps/campus.selavpr \
        image_topic:=/camera/image_raw

Arguments (each overrides params_file only when given): prior_map, save_map, checkpoint,
extractor, device, image_topic, odom_topic, camera_info_topic, depth_topic, autostart,
use_sim_time; also params_file
(default: the installed config/loop_closure.yaml), namespace, node_name, log_level.
For LIO-SAM, remap the node's ``loop_closure_detection`` onto ``lio_loop/loop_closure_detection``
(see the README, "Loop closure for SLAM").
"""

from launch import LaunchDescription
from selavpr_ros.ros.launch import node_launch


def generate_launch_description() -> LaunchDescription:
    return node_launch("loop_closure_node", "loop_closure.yaml", {
        "prior_map": ("prior_map", "place map of an earlier run (and the extractor)"),
        "save_map": ("save_map", "where the run is saved as a place map"),
        "odom_topic": ("odom_topic", "odometry topic"),
        "camera_info_topic": ("camera_info_topic", "CameraInfo topic (relative poses)"),
        "depth_topic": ("depth_topic", "registered depth topic (PnP relative poses)"),
    })
