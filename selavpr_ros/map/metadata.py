"""Place metadata in SQLite (``places.sqlite``): id, stamp, frame, pose, source, optional GPS.

SQLite gives each commit a transaction. The manifest's place count is authoritative: rows with
``id >= count`` are left over from an append that died before its manifest was replaced; readers
never return them and the next writer deletes them before inserting.

Rows below ``count`` never change, so the columns a query needs for every candidate (stamp and
pose) are also kept in memory as a :class:`PlaceTable`: read once, extended with the new rows
when ``count`` grows (a commit), so that it always holds exactly the rows readers may see.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from selavpr_ros.errors import MapFormatError
from selavpr_ros.io.poses import MAX_STAMP_NS

SCHEMA_VERSION = 1
_COLUMNS = (
    "id, stamp_ns, frame_id, px, py, pz, qx, qy, qz, qw, source, source_ref, "
    "latitude, longitude, altitude"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS places (
    id INTEGER PRIMARY KEY,
    stamp_ns INTEGER NOT NULL,
    frame_id TEXT NOT NULL,
    px REAL, py REAL, pz REAL,
    qx REAL, qy REAL, qz REAL, qw REAL,
    source TEXT NOT NULL,
    source_ref TEXT NOT NULL,
    latitude REAL, longitude REAL, altitude REAL
);
"""


@dataclass(frozen=True)
class PlaceInfo:
    """What is known about a place when it is added to a map.

    Attributes:
        stamp_ns: when the place's image was recorded (ns since the epoch; 0 if unknown).
        frame_id: the camera frame of the image.
        position: (x, y, z) in the map frame, or None.
        orientation: quaternion (x, y, z, w) in the map frame, or None.
        source: where the image came from (bag path and topic, image folder, ...).
        source_ref: the image's reference inside the source (message index, file name).
        gps: (latitude, longitude, altitude) in degrees and metres, or None.
    """

    stamp_ns: int = 0
    frame_id: str = ""
    position: tuple[float, float, float] | None = None
    orientation: tuple[float, float, float, float] | None = None
    source: str = ""
    source_ref: str = ""
    gps: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, int | np.integer):
            raise ValueError(f"stamp_ns must be an integer, got {self.stamp_ns!r}")
        if not 0 <= int(self.stamp_ns) <= MAX_STAMP_NS:
            raise ValueError(f"stamp_ns {self.stamp_ns} is outside 0 .. {MAX_STAMP_NS}")
        for name, size in (("position", 3), ("orientation", 4), ("gps", 3)):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != size:
                    raise ValueError(f"{name} needs {size} values, got {len(value)}")
                if not all(math.isfinite(v) for v in value):
                    raise ValueError(f"{name} must be finite, got {value}")
                object.__setattr__(self, name, value)

    @property
    def has_pose(self) -> bool:
        return self.position is not None and self.orientation is not None


@dataclass(frozen=True, kw_only=True)
class Place(PlaceInfo):
    """A place stored in a map, with its id (its row in the descriptors and in the index)."""

    id: int


def _row(place_id: int, p: PlaceInfo) -> tuple[object, ...]:
    pos = p.position if p.position is not None else (None, None, None)
    ori = p.orientation if p.orientation is not None else (None, None, None, None)
    gps = p.gps if p.gps is not None else (None, None, None)
    return (place_id, int(p.stamp_ns), p.frame_id, *pos, *ori, p.source, p.source_ref, *gps)


def _place(row: Sequence[Any]) -> Place:
    def triple(values: Sequence[Any]) -> tuple[float, ...] | None:
        return None if values[0] is None else tuple(float(v) for v in values)

    # The casts: each slice has its column count; PlaceInfo.__post_init__ checks the sizes.
    return Place(
        id=int(row[0]),
        stamp_ns=int(row[1]),
        frame_id=str(row[2]),
        position=cast("tuple[float, float, float] | None", triple(row[3:6])),
        orientation=cast("tuple[float, float, float, float] | None", triple(row[6:10])),
        source=str(row[10]),
        source_ref=str(row[11]),
        gps=cast("tuple[float, float, float] | None", triple(row[12:15])),
    )


_POSE_COLUMNS = ("px", "py", "pz", "qx", "qy", "qz", "qw")
_TABLE_ROW = np.dtype([("id", np.int64), ("stamp_ns", np.int64),
                       *((name, np.float64) for name in _POSE_COLUMNS)])


@dataclass(frozen=True)
class PlaceTable:
    """Stamps and poses of places ``0..len-1`` as read-only numpy columns (row = place id).

    What the localizer reads for each of its candidates, without SQLite or a Python object per
    place. ``position`` / ``orientation`` hold NaN where ``has_position`` / ``has_orientation``
    is False.
    """

    stamp_ns: np.ndarray  # (n,) int64
    position: np.ndarray  # (n, 3) float64
    orientation: np.ndarray  # (n, 4) float64 (x, y, z, w)
    has_position: np.ndarray  # (n,) bool
    has_orientation: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.stamp_ns)

    @staticmethod
    def from_rows(rows: Iterable[Sequence[Any]], start: int, where: Path) -> PlaceTable:
        """Read rows ``(id, stamp_ns, px, py, pz, qx, qy, qz, qw)`` with ids ``start..``.

        ``rows`` may be a SQLite cursor: rows are converted one at a time (NULL -> NaN), never
        held as a list of Python tuples.
        """
        try:
            data = np.fromiter(rows, dtype=_TABLE_ROW)
        except (TypeError, ValueError, OverflowError) as err:
            raise MapFormatError(f"{where}: a place row has an invalid value: {err}") from err
        if not np.array_equal(data["id"], np.arange(start, start + len(data))):
            raise MapFormatError(f"{where}: place rows from {start} on are not all there")
        values = np.stack([data[name] for name in _POSE_COLUMNS], axis=1)
        known = ~np.isnan(values)
        for name, part in (("position", known[:, :3]), ("orientation", known[:, 3:])):
            if np.any(part.any(axis=1) != part.all(axis=1)):
                raise MapFormatError(f"{where}: a place has a partial {name}")
        return PlaceTable(data["stamp_ns"].copy(), values[:, :3], values[:, 3:], known[:, 0],
                          known[:, 3])

    def extended(self, more: PlaceTable) -> PlaceTable:
        """Return this table followed by ``more`` (new arrays: snapshots never change)."""
        if not len(self):
            return more
        if not len(more):
            return self
        return PlaceTable(*(np.concatenate(pair) for pair in zip(
            self._columns(), more._columns(), strict=True)))

    def _columns(self) -> tuple[np.ndarray, ...]:
        return (self.stamp_ns, self.position, self.orientation, self.has_position,
                self.has_orientation)

    def __post_init__(self) -> None:
        for column in self._columns():
            column.setflags(write=False)


_EMPTY_TABLE = PlaceTable(np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 4)),
                          np.zeros(0, np.bool_), np.zeros(0, np.bool_))


def rows_digest(rows: Iterable[Sequence[object]]) -> str:
    """sha256 of rows in a canonical text form (independent of the SQLite file's layout)."""
    digest = hashlib.sha256()
    for row in rows:
        values = [repr(v) if isinstance(v, float) else v for v in row]
        digest.update(json.dumps(values).encode("utf-8") + b"\n")
    return digest.hexdigest()


class MetadataStore:
    """The ``places`` table of a map; ``count`` bounds what readers see.

    The connection may be used from any thread (ROS executors call from worker threads); a lock
    serialises access to it.
    """

    def __init__(self, path: Path, count: int, *, writable: bool) -> None:
        self.path = Path(path)
        self.count = count
        self._table = _EMPTY_TABLE
        if not self.path.is_file():
            raise MapFormatError(f"{self.path} is missing (place metadata)")
        # A read-write connection lets SQLite roll back a journal left by a killed writer;
        # a read-only file system is opened read-only (it cannot hold such a journal).
        mode = "rw" if writable or os.access(self.path.parent, os.W_OK) else "ro"
        try:
            self._lock = threading.Lock()
            # as_uri() escapes '#', '?' and '%' in the path, which would else end the file name
            self._db = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode={mode}", uri=True, check_same_thread=False
            )
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute(
                "SELECT value FROM schema WHERE key='version'"
            ).fetchone()
            stored = self._db.execute(
                "SELECT COUNT(*) FROM places WHERE id < ?", (count,)
            ).fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise MapFormatError(f"{self.path} is not a readable place database: {err}") from err
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise MapFormatError(
                f"{self.path}: metadata schema version {version and version[0]!r} is not "
                f"supported (expected {SCHEMA_VERSION})"
            )
        if stored != count:
            raise MapFormatError(
                f"{self.path} holds {stored} of the {count} places listed in the manifest"
            )

    @staticmethod
    def create(path: Path) -> None:
        db = sqlite3.connect(path)
        try:
            with db:
                db.executescript(_SCHEMA)
                db.execute(
                    "INSERT OR REPLACE INTO schema VALUES ('version', ?)", (str(SCHEMA_VERSION),)
                )
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def drop_uncommitted(self) -> int:
        """Delete rows left by an append that never committed its manifest."""
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM places WHERE id >= ?", (self.count,))
        return cur.rowcount

    def insert(self, places: Sequence[PlaceInfo]) -> str:
        """Insert places with ids count.. in one transaction; return the rows' digest.

        ``count`` is not advanced here: the caller does that after the manifest is committed.
        """
        rows = [_row(self.count + i, p) for i, p in enumerate(places)]
        with self._lock, self._db:
            self._db.execute("DELETE FROM places WHERE id >= ?", (self.count,))
            self._db.executemany(
                f"INSERT INTO places ({_COLUMNS}) VALUES ({', '.join('?' * 15)})", rows
            )
        return rows_digest(rows)

    def get(self, ids: Sequence[int]) -> list[Place]:
        """Places by id, in the order asked; raises IndexError for unknown ids."""
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < self.count:
                raise IndexError(f"place id {i} is not in the map (0..{self.count - 1})")
        found: dict[int, Place] = {}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            query = f"SELECT {_COLUMNS} FROM places WHERE id IN ({', '.join('?' * len(part))})"
            with self._lock:
                rows = self._db.execute(query, part).fetchall()
            for row in rows:
                try:
                    found[int(row[0])] = _place(row)
                except (TypeError, ValueError) as err:
                    raise MapFormatError(
                        f"{self.path}: place {row[0]!r} has an invalid value: {err}"
                    ) from err
        return [found[i] for i in ids]

    def table(self) -> PlaceTable:
        """Return the :class:`PlaceTable` of places ``0..count-1``, reading only new rows.

        Rows below ``count`` never change (module docstring), so the table read so far stays
        valid; a smaller ``count`` (never set by a commit) reads the table again.
        """
        with self._lock:
            table, count = self._table, self.count
            if len(table) > count:
                table = _EMPTY_TABLE
            if len(table) < count:
                rows = self._db.execute(
                    f"SELECT id, stamp_ns, {', '.join(_POSE_COLUMNS)} FROM places "
                    "WHERE id >= ? AND id < ? ORDER BY id", (len(table), count))
                table = table.extended(PlaceTable.from_rows(rows, len(table), self.path))
                if len(table) != count:
                    raise MapFormatError(f"{self.path} holds {len(table)} of the {count} places "
                                         "listed in the manifest")
            self._table = table
        return table

    def digest(self, start: int, stop: int) -> str:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM places WHERE id >= ? AND id < ? ORDER BY id",
                (start, stop),
            ).fetchall()
        return rows_digest(rows)

    def copy_rows(self, source: Path, count: int) -> str:
        """Append rows ``0..count-1`` of another map's database, renumbered after this one's.

        One SQL statement in one transaction (merging maps copies 100k rows in well under a
        second this way); returns the digest of the copied rows under their new ids.
        """
        uri = f"{Path(source).resolve().as_uri()}?mode=ro"
        columns = _COLUMNS.split(", ", 1)[1]  # all but id
        with self._lock:
            self._db.execute("ATTACH DATABASE ? AS src", (uri,))
            try:
                with self._db:
                    self._db.execute("DELETE FROM places WHERE id >= ?", (self.count,))
                    self._db.execute(
                        f"INSERT INTO places ({_COLUMNS}) SELECT id + ?, {columns} "
                        "FROM src.places WHERE id < ? ORDER BY id", (self.count, count))
            except sqlite3.DatabaseError as err:
                raise MapFormatError(f"{source} is not a readable place database: {err}") from err
            finally:
                self._db.execute("DETACH DATABASE src")
        return self.digest(self.count, self.count + count)
