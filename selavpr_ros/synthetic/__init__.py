"""Synthetic routes with exact poses: a procedural street rendered along several traversals.

Used for tests and the demo on machines without data sets or weights. numpy/OpenCV only.

    config = RouteConfig(seed=7, frames=100)
    write_route(config, "out/", formats=("folder", "bag"))
"""

from selavpr_ros.synthetic.depth import camera_info, render_depth, render_traversal_depth
from selavpr_ros.synthetic.render import LIGHTING, Camera, Lighting
from selavpr_ros.synthetic.route import (
    RouteConfig,
    SyntheticFrame,
    Traversal,
    render_route,
    render_traversal,
    route_world,
    traversal_poses,
)
from selavpr_ros.synthetic.world import World, WorldConfig, make_world
from selavpr_ros.synthetic.writers import write_bag, write_image_folder, write_route

__all__ = [
    "LIGHTING", "Camera", "Lighting", "RouteConfig", "SyntheticFrame", "Traversal", "World",
    "WorldConfig", "camera_info", "make_world", "render_depth", "render_route",
    "render_traversal", "render_traversal_depth", "route_world", "traversal_poses",
    "write_bag", "write_image_folder", "write_route",
]
