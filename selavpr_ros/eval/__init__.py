"""Evaluation: Recall@N, precision-recall of the decision, latency, reports and plots.

ROS-free: the offline runner uses the core localizer; the live runner (``eval.live``) is the
only module here that imports rclpy, and only when it is used.
"""
