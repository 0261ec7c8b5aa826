"""The in-memory place table holds exactly the SQLite rows of the map's current generation.

Rows are read here with plain ``sqlite3``, not through the map's metadata store.
"""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from extractor_testlib import unit
from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo, Features
from selavpr_ros.io.poses import MAX_STAMP_NS
from selavpr_ros.map import PlaceInfo, PlaceMap
from selavpr_ros.map import place_map as place_map_module
from selavpr_ros.map.merge import merge_maps

INFO = ExtractorInfo("fake", "w", global_dim=8, local_count=4, local_dim=4)


def features(start: int, n: int) -> Features:
    rng = np.random.default_rng(start)
    return Features(unit(rng.standard_normal((n, 8))), unit(rng.standard_normal((n, 4, 4))))


def infos(start: int, n: int) -> list[PlaceInfo]:
    """Every third place without a pose, every fifth with a position but no orientation."""
    out = []
    for i in range(start, start + n):
        position = None if i % 3 == 0 else (0.5 * i, -1.25 * i, 1e-3 * i)
        orientation = None if i % 3 == 0 or i % 5 == 0 else (0.0, 0.6, 0.0, 0.8)
        stamp = MAX_STAMP_NS if i == 4 else 10**9 * i + 1  # one beyond float64's exact range
        out.append(PlaceInfo(stamp_ns=stamp, position=position, orientation=orientation,
                             source="t", source_ref=str(i)))
    return out


def sqlite_rows(path: Path) -> list[tuple]:
    with closing(sqlite3.connect(path / "places.sqlite")) as db:
        return db.execute("SELECT id, stamp_ns, px, py, pz, qx, qy, qz, qw FROM places "
                          "ORDER BY id").fetchall()


def assert_table_is_rows(pm: PlaceMap, path: Path) -> None:
    """Check that the table equals the SQLite rows with id < count, and nothing else."""
    table = pm.place_table()
    rows = [r for r in sqlite_rows(path) if r[0] < pm.count]
    assert len(table) == pm.count == len(rows)
    for row in rows:
        i = row[0]
        assert int(table.stamp_ns[i]) == row[1]
        for column, known, values in ((table.position, table.has_position, row[2:5]),
                                      (table.orientation, table.has_orientation, row[5:9])):
            assert bool(known[i]) == (values[0] is not None)
            if values[0] is None:
                assert all(math.isnan(v) for v in column[i].tolist())
            else:
                assert tuple(column[i].tolist()) == values


def test_table_follows_appends_reopen_and_readers(tmp_path: Path) -> None:
    path = tmp_path / "m"
    with PlaceMap.create(path, INFO) as pm:
        assert len(pm.place_table()) == 0
        pm.append(features(0, 7), infos(0, 7))
        assert_table_is_rows(pm, path)
        first = pm.place_table()
        with PlaceMap.open(path) as reader:  # opened at 7 places
            assert_table_is_rows(reader, path)
            pm.append(features(7, 5), infos(7, 5))
            assert_table_is_rows(pm, path)
            assert len(first) == 7  # an earlier snapshot is never changed
            # the reader stays at its generation: rows 7.. exist but are not its places
            assert len(sqlite_rows(path)) == 12 and len(reader.place_table()) == 7
            assert_table_is_rows(reader, path)
        # and what the table says is what places() says
        table = pm.place_table()
        for place in pm.places(range(12)):
            assert place.stamp_ns == int(table.stamp_ns[place.id])
            assert place.position == (tuple(table.position[place.id].tolist())
                                      if table.has_position[place.id] else None)
            assert place.orientation == (tuple(table.orientation[place.id].tolist())
                                         if table.has_orientation[place.id] else None)
        with pytest.raises(ValueError):
            table.stamp_ns[0] = 1  # read-only: queries share it
    with PlaceMap.open(path) as reopened:
        assert_table_is_rows(reopened, path)
        assert int(reopened.place_table().stamp_ns[4]) == MAX_STAMP_NS


def test_rows_of_an_unfinished_commit_are_not_in_the_table(tmp_path: Path,
                                                           monkeypatch) -> None:
    path = tmp_path / "m"
    with PlaceMap.create(path, INFO) as pm:
        pm.append(features(0, 4), infos(0, 4))
        pm.place_table()

        def fail(*_args: object) -> None:
            raise OSError("disk full")

        with monkeypatch.context() as patch:
            patch.setattr(place_map_module, "write_manifest", fail)
            with pytest.raises(OSError, match="disk full"):
                pm.append(features(4, 3), infos(4, 3))
        assert len(sqlite_rows(path)) == 7  # inserted, never committed
        assert_table_is_rows(pm, path)
        assert len(pm.place_table()) == 4
        pm.append(features(4, 2), infos(40, 2))  # other rows under the same ids
        assert_table_is_rows(pm, path)
        assert pm.place_table().has_position.tolist()[4:] == [True, True]  # 40, 41


def test_merged_map_table(tmp_path: Path) -> None:
    for name, start in (("a", 0), ("b", 6)):
        with PlaceMap.create(tmp_path / name, INFO) as pm:
            pm.append(features(start, 6), infos(start, 6))
    merge_maps(tmp_path / "ab", [tmp_path / "a", tmp_path / "b"], progress=False)
    with PlaceMap.open(tmp_path / "ab") as merged:
        assert_table_is_rows(merged, tmp_path / "ab")
        assert merged.place_table().has_position.tolist() == [i % 3 != 0 for i in range(12)]


@pytest.mark.parametrize(("change", "message"), [("py = NULL", "partial position"),
                                                ("qw = NULL", "partial orientation"),
                                                ("px = 'east'", "invalid value")])
def test_a_damaged_row_is_refused(tmp_path: Path, change: str, message: str) -> None:
    path = tmp_path / "m"
    with PlaceMap.create(path, INFO) as pm:
        pm.append(features(0, 3), infos(0, 3))
    with closing(sqlite3.connect(path / "places.sqlite")) as db, db:
        db.execute(f"UPDATE places SET {change} WHERE id = 1")
    with PlaceMap.open(path) as pm, pytest.raises(MapFormatError, match=message):
        pm.place_table()
