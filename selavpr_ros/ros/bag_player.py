"""Plays a rosbag2 onto ROS 2 with its recorded timing and /clock (there is no ``ros2 bag`` here).

Messages are published as the serialized CDR bytes stored in the bag (rclpy publishes bytes
directly), so nothing is decoded or re-encoded on the way: subscribers receive exactly what was
recorded. The schedule follows the recording times: message i goes out at
``start + (t_i - t_0) / rate`` of wall time. /clock carries the bag time, with every message and
``clock_hz`` times a second in between, so nodes with ``use_sim_time`` follow the recording.
Playback starts only when every waited-for topic has a matched subscriber. With reliable QoS
the first message of each such topic is also waited on until acknowledged, because a subscriber
the publisher has matched may not yet have matched the publisher and would miss it: playback
pauses once, after every waited-for topic has sent its first message (up to one heartbeat
period of the DDS, 3 s with Fast DDS defaults), and the schedule resumes from there.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from selavpr_ros.errors import BagReadError, ConfigError
from selavpr_ros.io.bags import open_bag_reader
from selavpr_ros.ros.conversions import ns_to_stamp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlayOptions:
    """How a bag is played.

    Attributes:
        rate: speed factor (2.0 = twice as fast as recorded).
        topics: topics to play; empty = all the bag's topics.
        clock: publish /clock with the bag time.
        clock_hz: /clock messages per second of wall time while waiting between messages
            (0 = only with each message).
        reliability: publishers' QoS reliability, "reliable" or "best_effort".
        depth: publishers' queue depth.
        wait_for: topics that need a matched subscriber before playback starts; None = all
            played topics, () = start at once.
        wait_timeout_s: how long to wait for those subscribers.
    """

    rate: float = 1.0
    topics: tuple[str, ...] = ()
    clock: bool = True
    clock_hz: float = 50.0
    reliability: str = "reliable"
    depth: int = 100
    wait_for: tuple[str, ...] | None = None
    wait_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ConfigError(f"rate must be > 0, got {self.rate}")
        if self.clock_hz < 0:
            raise ConfigError(f"clock rate must be >= 0 Hz, got {self.clock_hz}")
        if self.reliability not in ("reliable", "best_effort"):
            raise ConfigError(f"reliability must be reliable or best_effort, got "
                              f"'{self.reliability}'")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if self.wait_timeout_s < 0:
            raise ConfigError(f"wait timeout must be >= 0 s, got {self.wait_timeout_s}")


@dataclass
class PlayStats:
    """What a playback did."""

    published: dict[str, int] = field(default_factory=dict)
    clock_messages: int = 0
    wall_s: float = 0.0
    bag_span_s: float = 0.0
    late: int = 0  # messages sent more than 10 ms after their scheduled time
    max_lag_ms: float = 0.0
    interrupted: bool = False


def message_class(msgtype: str) -> type:
    """``'sensor_msgs/msg/Image'`` -> ``sensor_msgs.msg.Image`` (the installed Python type)."""
    try:
        package, sub, name = msgtype.split("/")
        module = importlib.import_module(f"{package}.{sub}")
        return getattr(module, name)
    except (ValueError, ImportError, AttributeError) as err:
        raise BagReadError(f"message type {msgtype} is not installed for rclpy: {err}") from err


# called after each message is published: (topic, index of the message on its topic,
# recording time ns, wall time.monotonic() of the publish)
OnPublish = Callable[[str, int, int, float], None]
# decides whether message ``index`` of ``topic`` is played
Select = Callable[[str, int], bool]


class BagPlayer:
    """Publishes a bag's messages from an rclpy node (see the module docstring).

    Raises:
        BagReadError: the bag cannot be read, a requested topic is missing, or a message type
            is not installed for rclpy.
    """

    def __init__(self, node: Node, bag: str | Path, options: PlayOptions = PlayOptions()) -> None:
        self.node = node
        self.options = options
        self.path = Path(bag)
        self._reader = open_bag_reader(self.path)
        topics = {c.topic: c.msgtype for c in self._reader.connections}
        missing = [t for t in options.topics if t not in topics]
        if missing:
            self.close()
            listed = ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items()))
            raise BagReadError(f"bag {self.path} has no topic {', '.join(missing)}; its "
                               f"topics: {listed}")
        self.topics = {t: m for t, m in topics.items() if not options.topics or t in
                       options.topics}
        reliability = (ReliabilityPolicy.RELIABLE if options.reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(depth=options.depth, reliability=reliability)
        try:
            self._publishers = {t: node.create_publisher(message_class(m), t, qos)
                                for t, m in self.topics.items()}
        except BagReadError:
            self.close()
            raise
        self._clock_pub = node.create_publisher(Clock, "/clock", 10) if options.clock else None
        self._stop = threading.Event()

    def close(self) -> None:
        self._reader.close()

    def stop(self) -> None:
        """Ask a running :meth:`play` to stop after the current message."""
        self._stop.set()

    def subscriber_counts(self) -> dict[str, int]:
        return {t: p.get_subscription_count() for t, p in self._publishers.items()}

    def wait_for_subscribers(self, topics: Sequence[str] | None = None,
                             timeout_s: float | None = None,
                             alive: Callable[[], bool] | None = None) -> bool:
        """Wait until each of ``topics`` has a matched subscriber; False on timeout."""
        wanted = list(self.topics if topics is None else topics)
        timeout = self.options.wait_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        while True:
            counts = self.subscriber_counts()
            if all(counts.get(t, 0) > 0 for t in wanted):
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            if alive is not None and not alive():
                return False
            self._stop.wait(0.02)  # graph changes arrive from DDS threads; poll the count

    def _confirm(self, topics: set[str]) -> float:
        """Wait until the messages sent on ``topics`` are acknowledged; returns the wait (s)."""
        t0 = time.monotonic()
        timeout = Duration(nanoseconds=int(self.options.wait_timeout_s * 1e9))
        for topic in sorted(topics):
            if not self._publishers[topic].wait_for_all_acked(timeout):
                log.warning("the first message on %s was not acknowledged", topic)
        return time.monotonic() - t0

    def _publish_clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=ns_to_stamp(bag_ns)))
            self.stats.clock_messages += 1

    def play(self, select: Select | None = None, on_publish: OnPublish | None = None
             ) -> PlayStats:
        """Play the bag once with its recorded timing; returns what was published."""
        self.stats = stats = PlayStats(published={t: 0 for t in self.topics})
        wait_for = self.topics if self.options.wait_for is None else self.options.wait_for
        if wait_for and not self.wait_for_subscribers(list(wait_for)):
            counts = self.subscriber_counts()
            log.warning("playing without subscribers on %s after %.0f s",
                        ", ".join(t for t in wait_for if not counts.get(t)),
                        self.options.wait_timeout_s)
        connections = [c for c in self._reader.connections if c.topic in self.topics]
        index = {t: -1 for t in self.topics}
        confirm = set(wait_for) if self.options.reliability == "reliable" else set()
        pending = set(confirm)
        start_wall: float | None = None
        start_bag = 0  # set with start_wall by the first message
        last_bag = 0
        clock_period = 1.0 / self.options.clock_hz if self.options.clock_hz > 0 else None
        for conn, bag_ns, raw in self._reader.messages(connections=connections):
            index[conn.topic] += 1
            if select is not None and not select(conn.topic, index[conn.topic]):
                continue
            if start_wall is None:
                start_wall, start_bag = time.monotonic(), bag_ns
            due = start_wall + (bag_ns - start_bag) / 1e9 / self.options.rate
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= due:
                    break
                if clock_period is None:
                    self._stop.wait(due - now)
                    continue
                self._stop.wait(min(clock_period, due - now))
                if time.monotonic() < due:  # still waiting: move the clock on in between
                    elapsed = (time.monotonic() - start_wall) * self.options.rate
                    self._publish_clock(start_bag + int(elapsed * 1e9))
            if self._stop.is_set():
                stats.interrupted = True
                break
            lag_ms = (time.monotonic() - due) * 1e3
            stats.max_lag_ms = max(stats.max_lag_ms, lag_ms)
            stats.late += lag_ms > 10.0
            self._publish_clock(bag_ns)
            self._publishers[conn.topic].publish(bytes(raw))
            sent_at = time.monotonic()
            stats.published[conn.topic] += 1
            last_bag = bag_ns
            if on_publish is not None:
                on_publish(conn.topic, index[conn.topic], bag_ns, sent_at)
            if confirm and conn.topic in pending:
                pending.discard(conn.topic)
                if not pending:  # every waited-for topic has sent once: confirm them together
                    start_wall += self._confirm(confirm)
        if start_wall is not None:
            stats.wall_s = time.monotonic() - start_wall
            stats.bag_span_s = (last_bag - start_bag) / 1e9
        return stats
