"""Diagnostics as a robot user reads them: one status per concern, levels from recent windows.

Levels come from what happened in the last seconds, never from cumulative counters (one bad
minute must not leave a node WARN forever), and a node that receives no frames says so (STALE).
Names carry the node's fully qualified name, so two robots' nodes are told apart; the hardware
id is the device's name (the GPU model, or the CPU model).
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

# Levels are one-byte values in diagnostic_msgs (b"\x00" OK ... b"\x03" STALE).
OK: bytes = DiagnosticStatus.OK
WARN: bytes = DiagnosticStatus.WARN
ERROR: bytes = DiagnosticStatus.ERROR
STALE: bytes = DiagnosticStatus.STALE


@lru_cache(maxsize=8)
def device_name(device: str) -> str:
    """Human name of a torch device string ("NVIDIA H200", "AMD EPYC 7B13"), for hardware_id."""
    if device.startswith("cuda"):
        try:
            import torch

            return str(torch.cuda.get_device_name(torch.device(device)))
        except Exception:  # noqa: BLE001 - a name is cosmetic; never fail diagnostics for it
            return device
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or device


@dataclass(frozen=True)
class Window:
    """What happened recently (counts over ``window_s``) and since the last frame."""

    window_s: float
    received: int
    processed: int
    failed: int
    since_last_frame_s: float | None  # None: no frame since activation
    rate_hz: float


def input_level(w: Window, stale_after_s: float, active: bool, state: str) -> tuple[bytes, str]:
    if not active:
        return STALE, f"not processing: node is {state}"
    if w.since_last_frame_s is None:
        return STALE, "no frame received yet"
    if w.since_last_frame_s > stale_after_s:
        return STALE, f"no frame for {w.since_last_frame_s:.0f} s"
    return OK, "frames arriving"


def rate_level(w: Window, expected_rate: float) -> tuple[bytes, str]:
    if expected_rate > 0 and w.since_last_frame_s is not None and w.rate_hz < 0.5 * expected_rate:
        return WARN, f"processing {w.rate_hz:.2f} Hz, expected {expected_rate:.2f} Hz"
    return OK, f"processing {w.rate_hz:.2f} Hz"


def failure_level(w: Window) -> tuple[bytes, str]:
    attempts = w.processed + w.failed
    if not w.failed:
        return OK, f"no failed frame in the last {w.window_s:.0f} s"
    ratio = w.failed / max(attempts, 1)
    level = ERROR if ratio > 0.5 else WARN
    return level, f"{w.failed} of {attempts} frames failed in the last {w.window_s:.0f} s"


def status(name: str, hardware_id: str, level_message: tuple[bytes, str],
           values: Mapping[str, Any]) -> DiagnosticStatus:
    level, message = level_message
    return DiagnosticStatus(
        name=name, hardware_id=hardware_id, level=level, message=message,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
