"""``selavpr replay BAG``: play a rosbag2 onto ROS 2 with its recorded timing and /clock.

    selavpr replay drive1                                  # all topics, recorded speed
    selavpr replay drive1 --topics /camera/image_raw --rate 0.5
    selavpr replay drive1 --list                           # topics, types and counts

A stand-in for ``ros2 bag play`` where the ros2 CLI is not installed. Playback waits until
every played topic (or those given with --wait-for) has a subscriber, up to --wait seconds.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay", help="play a rosbag2 onto ROS 2 with recorded timing and /clock",
        description="Publish a rosbag2's messages (sqlite3 or mcap) with their recorded timing "
                    "(scaled by --rate) and the bag time on /clock.")
    parser.add_argument("bag", metavar="BAG", help="rosbag2 directory")
    parser.add_argument("--topics", nargs="+", default=[], metavar="TOPIC",
                        help="topics to play (default: all)")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (default 1.0)")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--clock-hz", type=float, default=50.0,
                        help="/clock messages per second between messages (default 50)")
    parser.add_argument("--qos", default="reliable", choices=("reliable", "best_effort"),
                        help="publisher reliability (default reliable)")
    parser.add_argument("--depth", type=int, default=100, help="publisher queue depth")
    parser.add_argument("--wait-for", nargs="*", default=None, metavar="TOPIC",
                        help="topics that need a subscriber before playing (default: all "
                             "played; give no topic to start at once)")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="seconds to wait for those subscribers (default 10)")
    parser.add_argument("--list", action="store_true", help="list the bag's topics and exit")
    parser.set_defaults(handler=run)


def _list(bag: str) -> int:
    from selavpr_ros.io.bags import BagFrames

    with BagFrames(bag) as frames:
        for topic, (msgtype, count) in sorted(frames.topics.items()):
            print(f"{topic}  {msgtype}  {count}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.bag)
    import signal
    import threading

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from selavpr_ros.ros.bag_player import BagPlayer, PlayOptions

    options = PlayOptions(rate=args.rate, topics=tuple(args.topics), clock=not args.no_clock,
                          clock_hz=args.clock_hz, reliability=args.qos, depth=args.depth,
                          wait_for=None if args.wait_for is None else tuple(args.wait_for),
                          wait_timeout_s=args.wait)
    # Ctrl-C and SIGTERM only stop the playing loop: rclpy's own handlers would invalidate the
    # context under a publish in flight (an RCLError traceback)
    rclpy.init(args=["--ros-args"], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("selavpr_bag_player")
    player = None
    interrupted = threading.Event()

    def on_signal(*_: object) -> None:
        interrupted.set()
        if player is not None:
            player.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        player = BagPlayer(node, args.bag, options)
        print(f"playing {args.bag}: {', '.join(sorted(player.topics))} at x{args.rate:g}",
              flush=True)
        if interrupted.is_set():
            player.stop()
        stats = player.play()
    finally:
        if player is not None:
            player.close()
        node.destroy_node()
        rclpy.try_shutdown()
    if interrupted.is_set() or stats.interrupted:
        print(f"replay: interrupted after {sum(stats.published.values())} messages",
              file=sys.stderr)
        return 130
    total = sum(stats.published.values())
    print(f"published {total} messages in {stats.wall_s:.2f} s (bag span {stats.bag_span_s:.2f} "
          f"s, rate x{args.rate:g}); /clock {stats.clock_messages}; late {stats.late} "
          f"(max lag {stats.max_lag_ms:.1f} ms)")
    for topic, count in sorted(stats.published.items()):
        print(f"  {topic}: {count}")
    return 0
