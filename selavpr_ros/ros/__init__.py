"""Conversions between the ROS-free core's types and ROS 2 messages (imports rclpy messages)."""
