"""Latency percentiles, throughput and peak memory of an evaluation run.

Percentiles are numpy's linear interpolation between order statistics (``np.percentile``
default), stated in every report so figures from different tools can be compared.
Peak memory is the process's high-water resident set (``VmHWM`` in ``/proc/self/status``):
it includes the model, the map and everything else the process ever held at once.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PERCENTILES: tuple[int, ...] = (50, 95, 99)


def summarize(values_ms: Sequence[float]) -> dict[str, Any]:
    """count, mean, p50/p95/p99 and max of latencies in ms (None when there are none)."""
    v = np.asarray([x for x in values_ms if x is not None and math.isfinite(x)], np.float64)
    if not len(v):
        return {"count": 0, "mean": None, "max": None, **{f"p{p}": None for p in PERCENTILES}}
    out: dict[str, Any] = {"count": int(len(v)), "mean": float(v.mean())}
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(v, p))
    out["max"] = float(v.max())
    return out


def summarize_stages(stages: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Per-stage summaries over queries, stages in the order they first appear."""
    names: list[str] = []
    for row in stages:
        names += [k for k in row if k not in names]
    return {name: summarize([row[name] for row in stages if name in row]) for name in names}


def throughput_hz(count: int, wall_s: float) -> float | None:
    """Return the queries answered per second of wall time."""
    return count / wall_s if wall_s > 0 and count else None


def peak_rss_mb(status_path: str = "/proc/self/status") -> float | None:
    """Peak resident memory of this process in MiB (VmHWM), None where /proc is missing."""
    try:
        with open(status_path, encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    try:  # not Linux: getrusage's peak (kB on Linux, bytes on macOS)
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (2**20 if platform.system() == "Darwin" else 1024.0)
    except (ImportError, OSError):
        return None


def peak_cuda_mb() -> float | None:
    """Peak CUDA memory allocated by torch in MiB, None without an initialised CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def machine() -> dict[str, Any]:
    """Describe the machine the figures were measured on."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
