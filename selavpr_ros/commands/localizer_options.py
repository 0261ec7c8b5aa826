"""Command-line flags for the localizer settings, derived from LocalizerConfig's fields.

The flags, the node's parameters and config/localizer.yaml all come from the same field
metadata (name, default, range, help), so a setting is added in one place.
"""

from __future__ import annotations

import argparse
from typing import Any

from selavpr_ros.localizer.config import LocalizerConfig, config_from_values, settings


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_localizer_arguments(parser: argparse.ArgumentParser, title: str) -> None:
    """Add one flag per LocalizerConfig setting (device and precision come from the extractor)."""
    group = parser.add_argument_group(title)
    for s in settings(node_only=True):
        kind: Any = type(s.default)
        extra: dict[str, Any] = {}
        if s.name == "margin_mode":
            extra["choices"] = ("ratio", "difference")
        if isinstance(s.default, bool):  # --pose-refine / --no-pose-refine
            extra["action"] = argparse.BooleanOptionalAction
        else:
            extra["type"] = kind
        group.add_argument(flag(s.name), dest=s.name, default=s.default,
                           help=f"{s.description} (default {s.default})", **extra)


def config_from_args(args: argparse.Namespace, device: str, precision: str) -> LocalizerConfig:
    """Return the LocalizerConfig given by :func:`add_localizer_arguments` flags."""
    values = {s.name: getattr(args, s.name) for s in settings(node_only=True)}
    return config_from_values(values, device=device, precision=precision)
