"""A one-slot mailbox between a subscription callback and a worker thread.

The camera callback only drops its message into the slot; the worker always takes the newest
frame. A frame that is replaced before the worker took it is counted as dropped, so under load
the node answers the most recent frame instead of building a backlog (latency stays bounded).
No rclpy here, so it is tested on its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    """A frame handed to the worker, with when it was received (monotonic seconds)."""

    item: Any
    received: float


class LatestFrameSlot:
    """Holds at most one pending frame; ``put`` never blocks, ``take`` waits for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: Delivery | None = None
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: Any) -> None:
        """Offer a new frame; an older frame still waiting is dropped (and counted)."""
        with self._cond:
            self.received += 1
            if self._pending is not None:
                self.dropped += 1
            self._pending = Delivery(item, time.monotonic())
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Delivery | None:
        """Return the newest frame, waiting up to ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._pending is not None or self._closed,
                                       timeout):
                return None
            delivery, self._pending = self._pending, None
            return delivery

    def close(self) -> None:
        """Wake the worker so it can exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
