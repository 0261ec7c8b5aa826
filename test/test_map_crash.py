"""A map killed (SIGKILL) in the middle of an append reopens as its last complete commit.

A child process appends batches in a loop and prints a marker before each step of a commit
(segment files, index, metadata, manifest tmp file, manifest rename), sleeping briefly after
the marker so the kill lands there; other runs kill after random delays. After every kill the
map must open, validate, hold exactly the places of a complete commit with the right content,
and accept further appends.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.map import PlaceMap

ROOT = Path(__file__).resolve().parents[1]
BATCH = 4

GENERATOR = textwrap.dedent(
    """
    import numpy as np
    from selavpr_ros.extractors.base import ExtractorInfo, Features
    from selavpr_ros.map import PlaceInfo

    INFO = ExtractorInfo("crash-test", "w1", global_dim=24, local_count=64, local_dim=16)

    def features(start, n):
        rng = [np.random.default_rng([3, i]) for i in range(start, start + n)]
        g = np.stack([r.standard_normal(24) for r in rng]).astype(np.float32)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        loc = np.stack([r.standard_normal((64, 16)) for r in rng]).astype(np.float32)
        return Features(g, loc)

    def places(start, n):
        return [PlaceInfo(stamp_ns=i, frame_id="cam", position=(i, 0.0, 0.0),
                          orientation=(0.0, 0.0, 0.0, 1.0), source_ref=str(i))
                for i in range(start, start + n)]
    """
)

CHILD = GENERATOR + textwrap.dedent(
    """
    import os, sys, time
    import selavpr_ros.map.index as index_mod
    import selavpr_ros.map.place_map as pm_mod
    from selavpr_ros.map.metadata import MetadataStore

    path, pause, batch = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])

    def marked(name, fn):
        def wrapper(*args, **kwargs):
            print("phase", name, flush=True)
            time.sleep(pause)
            return fn(*args, **kwargs)
        return wrapper

    pm_mod.write_array = marked("segments", pm_mod.write_array)
    index_mod.write_index = marked("index", index_mod.write_index)
    MetadataStore.insert = marked("metadata", MetadataStore.insert)
    pm_mod.write_manifest = marked("manifest", pm_mod.write_manifest)
    os.replace = marked("rename", os.replace)

    m = pm_mod.PlaceMap.open(path, writable=True)
    while True:
        start = m.count
        m.append(features(start, batch), places(start, batch))
        print("committed", m.count, flush=True)
    """
)

NS: dict = {}
exec(GENERATOR, NS)


def check_complete_state(path: Path, at_least: int) -> int:
    with PlaceMap.open(path, verify=True, extractor=NS["INFO"]) as ro:
        n = ro.count
        assert n % BATCH == 0 and n >= at_least
        assert n <= at_least + BATCH  # at most the commit in flight when it was killed
        if n:
            expected = NS["features"](0, n)
            ids = np.arange(n)
            got = ro.features(ids)
            assert np.array_equal(got.global_desc, expected.global_desc)
            assert np.array_equal(got.local, expected.local.astype(np.float16))
            assert [p.source_ref for p in ro.places(ids)] == [str(i) for i in ids]
            res = ro.search(expected.global_desc, 1)
            assert np.array_equal(res.ids[:, 0], ids)
    return n


def run_child(path: Path, *, pause: float, kill_at: tuple[str, int] | None,
              delay: float | None) -> int:
    """Run the appending child, SIGKILL it, return the last count it reported committed.

    ``delay`` counts from the child's first marker (its first append), not from its start.
    """
    script = path.parent / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(pause), str(BATCH)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    committed = 0
    seen: dict[str, int] = {}
    began = None
    try:
        for line in proc.stdout:
            kind, value = line.split()
            began = time.monotonic() if began is None else began
            if kind == "committed":
                committed = int(value)
                continue
            seen[value] = seen.get(value, 0) + 1
            if kill_at and (value, seen[value]) == kill_at:
                time.sleep(pause / 2)  # inside the paused step
                break
            if delay is not None and time.monotonic() - began >= delay:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return committed


@pytest.fixture()
def map_path(tmp_path: Path) -> Path:
    path = tmp_path / "crash.selavpr"
    PlaceMap.create(path, NS["INFO"]).close()
    return path


# segments are written twice per commit (global, local): kill at the 2nd of them too
@pytest.mark.parametrize(
    "kill_at",
    [("segments", 3), ("segments", 4), ("index", 2), ("metadata", 2), ("manifest", 2),
     ("rename", 2), ("rename", 3)],
)
def test_kill_at_each_commit_step(map_path: Path, kill_at: tuple[str, int]) -> None:
    committed = run_child(map_path, pause=0.2, kill_at=kill_at, delay=None)
    n = check_complete_state(map_path, committed)
    # every marker comes before its step, so the commit it belongs to never happened
    phase, occurrence = kill_at
    commit = -(-occurrence // (2 if phase == "segments" else 1))  # 2 segment files per commit
    assert n == (commit - 1) * BATCH
    leftovers = {p.name for p in map_path.iterdir()}
    # the next writer cleans up and continues from the last complete state
    with PlaceMap.open(map_path, writable=True) as rw:
        rw.append(NS["features"](n, BATCH), NS["places"](n, BATCH))
    assert check_complete_state(map_path, n + BATCH) == n + BATCH
    with PlaceMap.open(map_path) as ro:
        listed = set(ro.manifest.data_files()) | {"manifest.json", ".write.lock"}
    assert {p.name for p in map_path.iterdir()} == listed, leftovers


def test_kill_at_random_times(map_path: Path) -> None:
    rng = random.Random(1234)
    last = 0
    for _ in range(4):
        committed = run_child(map_path, pause=0.0, kill_at=None, delay=rng.uniform(0.0, 0.25))
        last = check_complete_state(map_path, max(committed, last))
    assert last > 0
