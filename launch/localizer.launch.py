"""Launch the localizer node (managed; autostart by default).

    ros2 launch selavpr_ros localizer.launch.py map:=/maps/campus.selavpr \
        checkpoint:=/weights/SelaVPR_msls.pth image_topic:=/camera/image_raw

Arguments (each overrides params_file only when given): map, checkpoint, extractor, device,
image_topic, autostart, use_sim_time; also params_file (default: the installed
config/localizer.yaml, keyed ``/**:`` so it applies under any namespace), namespace,
node_name, log_level. Topics are relative: under ``namespace:=robot1`` the node publishes
``/robot1/place_recognition`` and reads ``/robot1/<image_topic>`` unless the topic is absolute.
``ros2 launch selavpr_ros localizer.launch.py --show-args`` lists them all.
"""

from launch import LaunchDescription
from selavpr_ros.ros.launch import node_launch


def generate_launch_description() -> LaunchDescription:
    return node_launch("localizer_node", "localizer.yaml")
