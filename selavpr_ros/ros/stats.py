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
        """The q-th percentile (0..100) of recent latencies; NaN before any frame."""
        with self._lock:
            values = list(self._latency_ms)
        return float(np.percentile(values, q)) if values else float("nan")

    def rate_hz(self, now: float | None = None, horizon_s: float = 5.0) -> float:
        """Frames processed per second over the last ``horizon_s`` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._done if now - t <= horizon_s]
        return len(recent) / horizon_s
