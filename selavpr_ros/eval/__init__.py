"""Evaluation: Recall@N, precision-recall of the decision, latency, reports and plots.

ROS-free, like the rest of the core: live evaluation through a running node lives in
:mod:`selavpr_ros.ros.live_eval` and hands its answers back as the same query records.
"""
