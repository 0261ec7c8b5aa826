"""Declaring node parameters with descriptions and ranges, reading them typed, live updates.

Every parameter is declared with a description (shown by ``ros2 param describe``) and, for
numbers, a range that rcl enforces on ``ros2 param set``; a parameter that cannot change while
the node runs is declared read-only, so rcl refuses the set with a reason. Live parameters are
checked as a whole by the node (a proposed set is refused with the core's ConfigError message)
and then applied. Both nodes declare their parameters here, one way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from selavpr_ros.errors import SelaVPRError
from selavpr_ros.localizer.config import Setting


@dataclass(frozen=True)
class Param:
    """One parameter: name, default (its type is the parameter's type), help, optional range."""

    name: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    read_only: bool = False


def from_settings(settings: Iterable[Setting]) -> list[Param]:
    """Node parameters for core settings (name, default, range, help from the dataclass)."""
    return [Param(s.name, s.default, s.description, s.low, s.high, read_only=not s.live)
            for s in settings]


def descriptor(p: Param) -> ParameterDescriptor:
    """Return the rcl descriptor of ``p``: description, range, read-only flag."""
    text = p.description + (" (read-only: set at start)" if p.read_only else "")
    d = ParameterDescriptor(description=text, read_only=p.read_only)
    if p.low is None or p.high is None or isinstance(p.default, bool):
        return d
    if isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
    elif isinstance(p.default, float):
        d.floating_point_range = [FloatingPointRange(
            from_value=float(p.low), to_value=float(p.high), step=0.0)]
    return d


def declare(node: Node, params: list[Param]) -> dict[str, Any]:
    """Declare ``params`` on ``node`` and return their current values by name."""
    return {p.name: node.declare_parameter(p.name, p.default, descriptor(p)).value
            for p in params}


def on_live_update(node: Node, values: dict[str, Any],
                   check: Callable[[dict[str, Any]], None],
                   apply: Callable[[dict[str, Any]], None]) -> None:
    """Validate each ``ros2 param set`` with ``check`` on the merged values, then ``apply`` them.

    ``check`` raises a SelaVPRError to refuse the set (its message is the reason the caller
    sees); ``values`` is updated in place once the set succeeded.
    """

    def validate(params: list[Parameter]) -> SetParametersResult:
        proposed = dict(values)
        proposed.update({p.name: p.value for p in params})
        try:
            check(proposed)
        except SelaVPRError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def commit(params: list[Parameter]) -> None:
        values.update({p.name: p.value for p in params})
        apply(values)

    node.add_on_set_parameters_callback(validate)
    node.add_post_set_parameters_callback(commit)


def yaml_value(value: Any) -> str:
    """Return a parameter value as YAML that rcl reads back with the declared type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if "e" not in repr(value) else f"{value:.1f}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def render_yaml(header: str, params: list[Param]) -> str:
    """Return the parameter file of ``params``: keyed ``/**`` (any node name, any namespace).

    config/*.yaml are this function's output (a test keeps them so), so a parameter is
    added in one place.
    """
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += ["/**:", "  ros__parameters:"]
    for p in params:
        entry = f"    {p.name}: {yaml_value(p.default)}"
        note = p.description + (" [read-only]" if p.read_only else "")
        if p.low is not None and p.high is not None and not isinstance(p.default, bool):
            note += f" [{p.low:g}, {p.high:g}]"
        lines.append(f"{entry:<40}# {note}")
    return "\n".join(lines) + "\n"
