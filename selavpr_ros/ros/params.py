"""Declaring node parameters with descriptions and ranges, and reading them back typed.

Every parameter is declared with a description (shown by ``ros2 param describe``) and, for
numbers, a range that rcl enforces on ``ros2 param set``; the node then maps them onto the
core's frozen dataclasses, whose own validation reports anything the ranges cannot express.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type is the parameter's type), help, optional range."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    read_only: bool = False


def declare(node: Node, params: list[Param]) -> dict[str, Any]:
    """Declare ``params`` on ``node`` and return their current values by name."""
    values: dict[str, Any] = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description, read_only=p.read_only)
        if p.low is not None and p.high is not None:
            if isinstance(p.default, bool):
                pass
            elif isinstance(p.default, int):
                descriptor.integer_range = [IntegerRange(
                    from_value=int(p.low), to_value=int(p.high), step=1)]
            elif isinstance(p.default, float):
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(p.low), to_value=float(p.high), step=0.0)]
        values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return values
