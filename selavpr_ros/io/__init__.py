"""Input/output without ROS: image decoding and encoding, rosbags, image folders."""
