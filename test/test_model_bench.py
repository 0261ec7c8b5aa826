"""The model benchmark runs end to end on a tiny configuration and prints its JSON summary."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_model.py"


def test_bench_model_prints_table_and_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench_model.py", "--backbone", "vits14", "--depth", "1", "--batch", "1", "2",
            "--iters", "1", "--warmup", "0"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert done.value.code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["backbone"] == "vits14" and summary["device"] == "cpu"
    rows = {(r["impl"], r["batch"]) for r in summary["results"]}
    assert rows == {("ours", 1), ("reference", 1), ("ours", 2), ("reference", 2)}
    assert all(r["images_per_s"] > 0 for r in summary["results"])
    assert set(summary["ours_over_reference"]) == {"1", "2"}
