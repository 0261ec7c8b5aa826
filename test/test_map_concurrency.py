"""Readers against a committing writer, in separate processes: no reader ever fails.

This is a localizer reloading a map that ``map_builder_node`` (or ``build-map --append``) is
extending. The writer appends in a loop for 30 s (every commit replaces the index file and
removes the previous one); readers keep opening the map, waiting a little (so that commits
land between open and first search, which loads the index) and querying it.
"""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

from selavpr_ros.map import PlaceMap
from test_map import build, make_features, make_places

pytestmark = pytest.mark.slow

DURATION_S = 30.0


def _writer(path: str, stop_at: float, out: multiprocessing.Queue) -> None:
    commits = 0
    try:
        with PlaceMap.open(path, writable=True) as pm:
            while time.time() < stop_at:
                start = pm.count
                pm.append(make_features(start, 2), make_places(start, 2))
                commits += 1
        out.put(("writer", commits, []))
    except Exception:  # noqa: BLE001 - reported to the test
        out.put(("writer", commits, [traceback.format_exc()]))


def _reader(path: str, stop_at: float, seed: int, out: multiprocessing.Queue) -> None:
    rng = random.Random(seed)
    opens, errors = 0, []
    query = make_features(3, 1).global_desc
    while time.time() < stop_at:
        try:
            with PlaceMap.open(path) as pm:
                time.sleep(rng.uniform(0.0, 0.05))  # commits land before the first search
                res = pm.search(query, 5)
                assert res.ids.shape == (1, min(5, pm.count)) and (res.ids >= 0).all()
                feats = pm.features(res.ids[0])
                assert np.allclose(np.linalg.norm(feats.global_desc, axis=1), 1.0, atol=1e-3)
                assert [p.id for p in pm.places(res.ids[0])] == res.ids[0].tolist()
            opens += 1
        except Exception as err:  # noqa: BLE001 - counted; the test asserts there are none
            errors.append(f"{type(err).__name__}: {err}")
    out.put(("reader", opens, errors))


def test_readers_never_fail_while_a_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "m.selavpr"
    build(path, [4]).close()
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    stop_at = time.time() + 5.0 + DURATION_S  # spawned interpreters take a few s to start
    procs = [ctx.Process(target=_writer, args=(str(path), stop_at, out))]
    procs += [ctx.Process(target=_reader, args=(str(path), stop_at, seed, out))
              for seed in range(3)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=DURATION_S + 120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    writer = [r for r in results if r[0] == "writer"]
    readers = [r for r in results if r[0] == "reader"]
    assert writer[0][2] == [], writer[0][2]
    commits = writer[0][1]
    opens = sum(r[1] for r in readers)
    errors = [e for r in readers for e in r[2]]
    assert errors == [], f"{len(errors)} of {opens + len(errors)} reads failed: {errors[:3]}"
    print(f"{commits} commits, {opens} reader opens and queries, 0 failures")
    assert commits >= 50 and opens >= 50, (commits, opens)
    with PlaceMap.open(path, verify=True) as pm:
        assert pm.count == 4 + 2 * commits
