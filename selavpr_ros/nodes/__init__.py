"""rclpy nodes: the thin ROS layer over the ROS-free core (messages, parameters, scheduling)."""
