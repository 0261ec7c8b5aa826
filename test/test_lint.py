"""Lint and type checks as tests, so that ``pytest`` and a colcon test run check them.

This is what ``ament_flake8`` and ``ament_pep257`` give a ROS package: ruff (pyflakes,
pycodestyle, isort, bugbear, complexity, pep257 docstrings) over the tree and mypy over
``selavpr_ros/``, with the settings in pyproject.toml. ``.ci/run`` also runs both before pytest.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (requirements-dev.txt)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing() -> None:
    proc = _run("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert proc.returncode == 0, f"ruff findings:\n{proc.stdout}{proc.stderr}"


def test_mypy_finds_nothing() -> None:
    proc = _run("mypy")
    assert proc.returncode == 0, f"mypy findings:\n{proc.stdout}{proc.stderr}"
