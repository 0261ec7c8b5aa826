"""`selavpr demo`, the README's second command: the whole pipeline, offline and over ROS 2."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

import ros_harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_runs_end_to_end_and_recognises_places(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [ros_harness.executable("selavpr"), "demo", "--out", str(out), "--frames", "30",
         "--rerank-k", "5", "--rate", "0.5"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    match = re.search(r"Recall over 30 query frames \(offline\): R@1 ([\d.]+)%", result.stdout)
    assert match, result.stdout[-2000:]
    # Positives lie within 5 m of a query on a 45 m route (1.5 m between frames): a random
    # answer is right about 7 times in 30; the demo must do far better.
    assert float(match.group(1)) >= 70.0
    live = json.loads((out / "live" / "evaluation.json").read_text())["live"]
    assert live["frames_sent"] == 30
    assert live["frames_answered"] >= 1
    assert live["agreement"]["same_ranking"] == live["agreement"]["compared"] >= 1
    for name in ("summary.md", "precision_recall.png", "trajectory.png"):
        assert (out / "offline" / name).stat().st_size > 1000
