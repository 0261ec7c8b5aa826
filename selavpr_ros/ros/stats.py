"""Rolling statistics the nodes report in diagnostics (rates, latency percentiles)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class RollingStats:
    """Latencies and completion times of the last ``window`` processed frames (thread-safe)."""

    def __init__(self, window: int = 200) -> None:
        self._lock = threading.Lock()
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._done: deque[float] = deque(maxlen=window)

    def add(self, latency_ms: float, now: float | None = None) -> None:
        with self._lock:
            self._latency_ms.append(float(latency_ms))
            self._done.append(time.monotonic() if now is None else now)

    def percentile(self, q: float) -> float:
        """Return the q-th percentile (0..100) of recent latencies; NaN before any frame."""
        with self._lock:
            values = list(self._latency_ms)
        return float(np.percentile(values, q)) if values else float("nan")

    def rate_hz(self, now: float | None = None, horizon_s: float = 5.0) -> float:
        """Frames processed per second over the last ``horizon_s`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._done if now - t <= horizon_s]
        return len(recent) / horizon_s


class EventWindow:
    """Times of recent events (failures, arrivals), so a level can say "in the last N seconds".

    A cumulative counter would keep a node WARN forever after one bad minute; diagnostics read
    this window instead (thread-safe).
    """

    def __init__(self, horizon_s: float = 30.0, maxlen: int = 10_000) -> None:
        self.horizon_s = horizon_s
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=maxlen)
        self.total = 0

    def add(self, now: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if now is None else now)
            self.total += 1

    def count(self, now: float | None = None, horizon_s: float | None = None) -> int:
        """Events in the last ``horizon_s`` seconds (default: the window's horizon)."""
        now = time.monotonic() if now is None else now
        horizon = self.horizon_s if horizon_s is None else horizon_s
        with self._lock:
            return sum(1 for t in self._times if now - t <= horizon)

    def last(self) -> float | None:
        """Monotonic time of the latest event, None before any."""
        with self._lock:
            return self._times[-1] if self._times else None
