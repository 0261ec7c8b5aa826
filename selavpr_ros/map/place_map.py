"""A place map on disk: the directory layout, opening, searching, appending and validation.

Layout of ``<name>.selavpr/`` (format version 2; version 1 maps open unchanged)::

    manifest.json            what the map holds and which files make up its current state
    places.sqlite            place metadata (id, stamp, frame, pose, source, GPS)
    global-<gen>.npy         float32 (n, D) global descriptors added by commit <gen>
    local-<gen>.npy          (n, L, C) local features added by commit <gen>, in the map's
                             local format (fp16 by default; int8, int4 = (n, L, C/2)
                             bytes of two codes, PCA, grid stride: see map/local_format.py)
    scale-<gen>.npy          float16 (n, L), per-feature scales, only for int8/int4 local features
    mask-<gen>.npy           bool (n, L), only for extractors with a variable feature count
    keypoints-<gen>.npy      float32 (n, L, 2), only for extractors with keypoints
    points-<gen>.npy         float16 (n, L, 3), optional per commit: the 3-D point (camera
                             optical frame, metres, NaN = no depth) at each local feature
    index-<gen>.faiss        the faiss index over all global descriptors at commit <gen>
    extractor/<name>.npy     the extractor's learned state (e.g. a VLAD vocabulary), written
                             once by :meth:`PlaceMap.create`; only for extractors with state
    codec/pca_components.npy the PCA projection of a PCA local format, fitted on the first
                             commit's features (or given to create) and never changed

The manifest's optional ``camera`` holds the map camera's model (CameraInfo fields); maps
without it or without points still open (their query poses fall back to keyframe poses).

Commits: new files are written and fsynced, metadata rows are inserted in one SQLite
transaction, then ``manifest.json`` is replaced atomically. Killing the process at any point
leaves the previous manifest, which names only complete files; leftovers are removed the next
time the map is opened for writing.

Checks: opening checks the cheap things (format version, every listed file exists with the
recorded size, array shapes and dtypes, metadata row count, extractor identity when one is
given). Full sha256 checksums of every file take seconds per GB, so they run in
:meth:`PlaceMap.validate` or with ``open(..., verify=True)``, not on every open.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from selavpr_ros.closing import Closing
from selavpr_ros.errors import MapFormatError
from selavpr_ros.extractors.base import Extractor, ExtractorInfo, Features
from selavpr_ros.geometry.camera import CameraModel
from selavpr_ros.map import index as idx
from selavpr_ros.map.fsutil import WriteLock, fsync_dir, sha256_file
from selavpr_ros.map.local_format import (
    CODEC_DIR,
    LocalCodec,
    LocalFormat,
    dequantize,
    unpack_int4,
)
from selavpr_ros.map.manifest import (
    METADATA_NAME,
    OPTIONAL_KINDS,
    STATE_DIR,
    FileEntry,
    Manifest,
    Segment,
    read_manifest,
    write_manifest,
)
from selavpr_ros.map.metadata import MetadataStore, Place, PlaceInfo, PlaceTable
from selavpr_ros.map.paths import map_file
from selavpr_ros.map.segments import (
    SegmentArrays,
    check_segment_files,
    expected_shapes,
    open_array,
    segment_file_name,
    segment_kinds,
    write_array,
)

log = logging.getLogger(__name__)

_DATA_FILE = re.compile(
    r"^(global|local|scale|mask|keypoints|points)-\d{6}\.npy$|^index-\d{6}\.faiss$"
)
_READER_ATTEMPTS = 20  # opens retried while writers commit in between
_STATE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class SearchResult:
    """Top-k of a global search: (B, k) similarities (best first) and place ids (-1 = none)."""

    similarities: np.ndarray
    ids: np.ndarray


def check_extractor(map_info: ExtractorInfo, info: ExtractorInfo, where: Path) -> None:
    """Raise MapFormatError unless ``info`` describes the extractor that built the map."""
    if map_info == info:
        return
    diffs = [
        f"{name}: map has {getattr(map_info, name)!r}, extractor has {getattr(info, name)!r}"
        for name in map_info.__dataclass_fields__
        if getattr(map_info, name) != getattr(info, name)
    ]
    raise MapFormatError(
        f"map {where} was built by extractor {map_info.describe()} and cannot be queried with "
        f"{info.describe()}: " + "; ".join(diffs)
    )


def _check_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Extractor state must be named, plain numeric arrays (stored as .npy without pickle)."""
    checked = {}
    for key, value in state.items():
        if not _STATE_KEY.match(key):
            raise MapFormatError(f"extractor state name {key!r} is not a plain identifier")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise MapFormatError(
                f"extractor state {key!r} has dtype {array.dtype}; only bool, integer and "
                "float arrays can be stored"
            )
        checked[key] = array
    return checked


def _write_state(
    directory: Path, state: dict[str, np.ndarray], subdir: str = STATE_DIR
) -> dict[str, FileEntry]:
    if not state:
        return {}
    (directory / subdir).mkdir(exist_ok=True)
    entries = {}
    for key, array in state.items():
        name = f"{subdir}/{key}.npy"
        entry = write_array(directory / name, array)
        entries[key] = FileEntry(name, entry.bytes, entry.sha256)
    fsync_dir(directory / subdir)
    return entries


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class PlaceMap(Closing):
    """A place map directory; see the module docstring for the layout and the guarantees."""

    def __init__(self, path: Path, manifest: Manifest, *, lock: WriteLock | None) -> None:
        """Use :meth:`create` or :meth:`open`; a map is writable when it holds the lock."""
        self.path = Path(path)
        self.writable = lock is not None
        writable = self.writable
        self._manifest = manifest
        self._lock = lock
        self._index_fd: int | None = None
        self._metadata: MetadataStore | None = None
        self._state: dict[str, np.ndarray] | None = None
        self._codec: LocalCodec | None = None
        self._index: faiss.Index | None = None
        self._search_index: faiss.Index | None = None
        try:
            # the index first: it is the one file a later commit removes
            self._check_index_file()
            self._metadata = MetadataStore(
                self._file(METADATA_NAME), manifest.count, writable=writable
            )
            self._arrays = {kind: SegmentArrays() for kind in self._kinds}
            self._points: list[tuple[int, np.ndarray | None]] = []  # (start, array) per segment
            for segment in manifest.segments:
                self._open_segment(segment)
            self._check_state_files()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- create / open / close
    @classmethod
    def create(
        cls,
        path: str | Path,
        extractor: Extractor | ExtractorInfo,
        *,
        index: idx.IndexSpec | None = None,
        map_frame: str = "map",
        local_dtype: str = "float16",
        extractor_state: dict[str, np.ndarray] | None = None,
        camera: CameraModel | None = None,
        local_format: LocalFormat | None = None,
        local_codec_state: dict[str, np.ndarray] | None = None,
    ) -> PlaceMap:
        """Create an empty map at ``path`` (a new or empty directory), open for writing.

        ``local_format`` (default: ``local_dtype`` as it is) says how local features are
        stored; ``local_codec_state`` reuses another map's PCA projection (so that maps of
        several drives can be merged), else it is fitted on the first commit.

        ``extractor_state`` (arrays the extractor learned, e.g. a VLAD vocabulary) is stored
        under ``extractor/`` with checksums and never changes afterwards; by default it is
        ``extractor.state()`` when an :class:`Extractor` is given, else none. ``camera``: the
        mapping camera's model (see also :meth:`set_camera`).
        """
        path = Path(path)
        info = extractor.info if isinstance(extractor, Extractor) else extractor
        if extractor_state is None and isinstance(extractor, Extractor):
            extractor_state = extractor.state()
        state = _check_state(extractor_state or {})
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise MapFormatError(f"cannot create a map at {path}: it exists and is not empty")
        if local_dtype not in ("float16", "float32"):
            raise MapFormatError(f"local_dtype must be float16 or float32, got {local_dtype!r}")
        fmt = local_format or LocalFormat(local_dtype)
        fmt.check(info)
        codec = LocalCodec(fmt, info, (local_codec_state or {}).get("pca_components"))
        path.mkdir(parents=True, exist_ok=True)
        lock = WriteLock(path)
        lock.acquire()
        MetadataStore.create(path / METADATA_NAME)
        state_files = _write_state(path, state)
        codec_files = _write_state(path, _check_state(codec.state()), CODEC_DIR)
        now = _now()
        manifest = Manifest(
            map_id=str(uuid.uuid4()),
            created=now,
            modified=now,
            generation=0,
            map_frame=map_frame,
            extractor=info,
            local_dtype=fmt.dtype,
            count=0,
            index={"spec": (index or idx.IndexSpec()).to_dict(), "file": None},
            extractor_state=state_files,
            camera=None if camera is None else camera.to_dict(),
            local_format=fmt,
            local_codec=codec_files,
        )
        fsync_dir(path)
        write_manifest(path, manifest)
        log.info("created place map %s (%s)", path, info.describe())
        return cls(path, manifest, lock=lock)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        writable: bool = False,
        verify: bool = False,
        extractor: Extractor | ExtractorInfo | None = None,
    ) -> PlaceMap:
        """Open a map (read-only unless ``writable``); ``verify`` also checks every sha256.

        Raises:
            MapFormatError: the map is missing, damaged, of an unknown version, or (when
                ``extractor`` is given) was built by another extractor or other weights.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if extractor is not None:
            info = extractor.info if isinstance(extractor, Extractor) else extractor
            check_extractor(manifest.extractor, info, path)
        if writable:
            # Lock first, then read the manifest again: a writer that committed in between
            # must not have its new files taken for garbage.
            lock = WriteLock(path)
            lock.acquire()
            try:
                place_map = cls(path, read_manifest(path), lock=lock)
            except BaseException:
                lock.release()
                raise
        else:
            place_map = cls._open_reader(path, manifest)
        try:
            if verify:
                place_map.validate()
            if writable:
                place_map._collect_garbage()
        except BaseException:
            place_map.close()
            raise
        return place_map

    @classmethod
    def _open_reader(cls, path: Path, manifest: Manifest) -> PlaceMap:
        """Open read-only, again when a writer committed while the files were being opened.

        A commit removes the index it supersedes; a reader that read the manifest just
        before may then miss that file. It reads the new manifest and opens that state.
        """
        for attempt in range(_READER_ATTEMPTS):
            try:
                return cls(path, manifest, lock=None)
            except MapFormatError:
                if attempt == _READER_ATTEMPTS - 1:
                    raise
                newer = read_manifest(path)
                if newer.generation == manifest.generation:
                    raise
                log.debug("map %s changed while opening (generation %d -> %d); again", path,
                          manifest.generation, newer.generation)
                manifest = newer
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._metadata is not None:
            self._metadata.close()
            self._metadata = None
        self._index = self._search_index = None
        self._close_index_fd()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


    def _close_index_fd(self) -> None:
        if self._index_fd is not None:
            os.close(self._index_fd)
            self._index_fd = None

    # ---------------------------------------------------------------- properties
    @property
    def _store(self) -> MetadataStore:
        if self._metadata is None:
            raise MapFormatError(f"map {self.path} is closed")
        return self._metadata

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def count(self) -> int:
        return self._manifest.count

    def __len__(self) -> int:
        return self.count

    @property
    def map_id(self) -> str:
        return self._manifest.map_id

    @property
    def map_frame(self) -> str:
        return self._manifest.map_frame

    @property
    def extractor_info(self) -> ExtractorInfo:
        return self._manifest.extractor

    @property
    def camera(self) -> CameraModel | None:
        """The mapping camera's model, None for maps built without camera info."""
        data = self._manifest.camera
        return None if data is None else CameraModel.from_dict(data)

    @property
    def has_points(self) -> bool:
        """True when some places have 3-D points at their local features (depth at mapping)."""
        return any(a is not None for _, a in self._points)

    @property
    def index_spec(self) -> idx.IndexSpec:
        return idx.IndexSpec.from_dict(self._manifest.index["spec"])

    @property
    def local_format(self) -> LocalFormat:
        return self._manifest.local_format

    @property
    def _kinds(self) -> tuple[str, ...]:
        info = self._manifest.extractor
        return segment_kinds(
            info.variable_local_count, info.has_keypoints, self.local_format.quantized
        )

    # ---------------------------------------------------------------- reading
    def _open_segment(self, segment: Segment) -> None:
        m, info = self._manifest, self._manifest.extractor
        check_segment_files(segment, self._kinds, str(self.path / "manifest.json"),
                            OPTIONAL_KINDS)
        points = None
        if "points" in segment.files:
            shape, dtype = expected_shapes("points", segment.rows, info.global_dim,
                                           m.local_format.stored_count(info), info.local_dim,
                                           m.local_dtype)
            points = open_array(self.path, segment.files["points"], shape, dtype)
        self._points.append((segment.start, points))
        for kind in self._kinds:
            shape, dtype = expected_shapes(
                kind, segment.rows, info.global_dim, m.local_format.stored_count(info),
                m.local_format.file_dim(info), m.local_format.file_dtype,
            )
            array = open_array(self.path, segment.files[kind], shape, dtype)
            self._arrays[kind].add(segment.start, array)

    def _check_index_file(self) -> None:
        entry = self._manifest.index_file
        if entry is None:
            return
        path = self._file(entry.name)
        # Hold the file open: a writer that commits later removes it, and the index is read
        # (through this descriptor) only at the first search.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
        except FileNotFoundError as err:
            raise MapFormatError(f"{path} is missing (the map's faiss index)") from err
        except OSError as err:
            raise MapFormatError(f"{path} cannot be read: {err}") from err
        self._index_fd = fd
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise MapFormatError(f"{path} is not a regular file (the map's faiss index)")
        size = status.st_size
        if size != entry.bytes:
            raise MapFormatError(f"{path} has {size} bytes, manifest says {entry.bytes}")

    def _check_state_files(self) -> None:
        for entry in (*self._manifest.extractor_state.values(),
                      *self._manifest.local_codec.values()):
            self._check_state_entry(entry)

    def _file(self, name: str) -> Path:
        """Resolve a file the manifest names; refuse one that leads outside the map."""
        return map_file(self.path, name)

    def _check_state_entry(self, entry: FileEntry) -> None:
        path = self._file(entry.name)
        if not path.is_file():
            raise MapFormatError(f"{path} is missing (the extractor state of the map)")
        if path.stat().st_size != entry.bytes:
            raise MapFormatError(
                f"{path} has {path.stat().st_size} bytes, manifest says {entry.bytes}: the "
                "extractor state is damaged; rebuild the map"
            )

    def load_index(self) -> faiss.Index | None:
        """Load the faiss index now (otherwise done by the first search); None when empty."""
        entry = self._manifest.index_file
        if self._index is None and entry is not None:
            path = self._file(entry.name)
            source = path if self._index_fd is None else Path(f"/proc/self/fd/{self._index_fd}")
            if not source.exists():  # no /proc: read by name
                source = path
            index = idx.read_index(source, self.index_spec, writable=self.writable, name=path)
            idx.check_index(index, path, self.count, self.extractor_info.global_dim)
            self._index = index
            self._close_index_fd()  # read (or mapped): the descriptor is no longer needed
        if self._search_index is None and self._index is not None:
            if not self.writable:  # never extended: the parallel shards replace the loaded index
                self._index = idx.threaded_shards(self._index, self.index_spec)
            self._search_index = idx.maybe_to_gpu(self._index, self.index_spec)
        return self._search_index

    def search(self, queries: np.ndarray, k: int) -> SearchResult:
        """Top-``k`` places by inner product of global descriptors, for (D,) or (B, D) queries."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.extractor_info.global_dim:
            raise ValueError(
                f"query descriptors have {q.shape[1]} dims, "
                f"map has {self.extractor_info.global_dim}"
            )
        k = min(int(k), self.count)
        if k <= 0:
            return SearchResult(
                np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
            )
        index = self.load_index()
        # k > 0: the map has places, and a manifest with places but no index is refused
        assert index is not None
        sims, ids = index.search(q, k)
        return SearchResult(sims.astype(np.float32), ids.astype(np.int64))

    def features(
        self, ids: Sequence[int] | np.ndarray, local_out: np.ndarray | None = None
    ) -> Features:
        """Read the stored features of places ``ids`` (local features decoded from int8).

        ``local_out``: a (len(ids), L, C) buffer of the map's local dtype to gather the local
        features into (the result then aliases it), so a caller that re-ranks every frame does
        not allocate ~100 MB each time.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if self.local_format.quantized:  # decoded for callers that want floats
            local, scale, _ = self.local_codes(ids)
            local = dequantize(local, scale)
        else:
            local = self._arrays["local"].gather(ids, out=local_out)
        return Features(
            global_desc=self._arrays["global"].gather(ids),
            local=local,
            local_mask=self._arrays["mask"].gather(ids) if "mask" in self._arrays else None,
            keypoints=(
                self._arrays["keypoints"].gather(ids) if "keypoints" in self._arrays else None
            ),
        )

    def keypoints(self, ids: Sequence[int] | np.ndarray) -> np.ndarray | None:
        """(len(ids), L, 2) stored keypoints of places ``ids``; None for grid extractors.

        What a pose needs of the places besides their points (no descriptors).
        """
        if "keypoints" not in self._arrays:
            return None
        return self._arrays["keypoints"].gather(np.asarray(ids, dtype=np.int64))

    def points(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """(len(ids), L, 3) float16 camera-frame points of places' local features.

        NaN where a place has no depth (or its commit stored no points).
        """
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.count):
            raise IndexError(f"place ids out of range 0..{self.count - 1}: {ids}")
        count = self.local_format.stored_count(self.extractor_info)
        out = np.full((len(ids), count, 3), np.nan, np.float16)
        starts = np.asarray([start for start, _ in self._points], np.int64)
        for row, place in enumerate(ids.tolist()):
            seg = int(np.searchsorted(starts, place, side="right")) - 1
            start, array = self._points[seg]
            if array is not None:
                out[row] = array[place - start]
        return out

    def local_codes(
        self, ids: Sequence[int] | np.ndarray, out: np.ndarray | None = None,
        packed: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Read the stored local features of ``ids`` as they are (codes, int8 scales, masks).

        Re-ranking reads these (into ``out``, a reused buffer of the code dtype and shape)
        and compares them with :meth:`LocalCodec.query` of the query, without decoding into
        floats. int4 bytes land in the first half of each row and expand there into int8 codes
        (``packed``: the bytes as stored instead).
        """
        ids = np.asarray(ids, dtype=np.int64)
        fmt, info = self.local_format, self.extractor_info
        if fmt.packed and not packed:
            shape = (len(ids), fmt.stored_count(info), fmt.stored_dim(info))
            codes = np.empty(shape, np.int8) if out is None else out
            if codes.shape != shape or codes.dtype != np.int8:
                raise ValueError(f"out is {codes.shape} {codes.dtype}, expected {shape} int8")
            self._arrays["local"].gather(ids, out=codes.view(np.uint8)[..., : fmt.file_dim(info)])
            unpack_int4(codes)
        else:
            codes = self._arrays["local"].gather(ids, out=out)
        scale = self._arrays["scale"].gather(ids) if "scale" in self._arrays else None
        mask = self._arrays["mask"].gather(ids) if "mask" in self._arrays else None
        return codes, scale, mask

    @property
    def codec(self) -> LocalCodec:
        """The local format's codec (with its PCA projection, checksum verified)."""
        if self._codec is None:
            state = self._read_arrays(self._manifest.local_codec, "local codec")
            self._codec = LocalCodec(
                self.local_format, self.extractor_info, state.get("pca_components")
            )
        return self._codec

    def global_descriptors(self) -> np.ndarray:
        """All (N, D) global descriptors (a copy)."""
        if self.count == 0:
            return np.zeros((0, self.extractor_info.global_dim), np.float32)
        return self._arrays["global"].all()

    def extractor_state(self) -> dict[str, np.ndarray]:
        """Return the extractor's learned state arrays ({} when it has none), checksums verified.

        Raises:
            MapFormatError: a state file is missing, damaged or not a plain numeric array.
        """
        if self._state is None:
            self._state = self._read_arrays(self._manifest.extractor_state, "extractor state")
        return dict(self._state)

    def _read_arrays(self, entries: dict[str, FileEntry], what: str) -> dict[str, np.ndarray]:
        state = {}
        for key, entry in entries.items():
            path = self._file(entry.name)
            self._check_state_entry(entry)
            found = sha256_file(path)
            if found != entry.sha256:
                raise MapFormatError(
                    f"{path}: checksum mismatch (sha256 {found[:16]}..., manifest "
                    f"{entry.sha256[:16]}...): the {what} is damaged; rebuild the map"
                )
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise MapFormatError(f"{path} is not a readable .npy array: {err}") from err
            array.setflags(write=False)
            state[key] = array
        return state

    def places(self, ids: Sequence[int] | np.ndarray) -> list[Place]:
        return self._store.get([int(i) for i in ids])

    def place_table(self) -> PlaceTable:
        """Stamps and poses of all places as numpy columns (see :class:`PlaceTable`).

        Read from the metadata at the first call and extended by later commits, so it holds the
        same rows as :meth:`places` at this map's current generation.
        """
        return self._store.table()

    def place(self, place_id: int) -> Place:
        return self._store.get([place_id])[0]

    # ---------------------------------------------------------------- validation
    def validate(self) -> None:
        """Full check: sha256 of every data file, metadata digests, index size and dim."""
        m = self._manifest
        entries: list[FileEntry] = [e for s in m.segments for e in s.files.values()]
        if m.index_file is not None:
            entries.append(m.index_file)
        entries += m.extractor_state.values()
        entries += m.local_codec.values()
        for entry in entries:
            path = self._file(entry.name)
            if not path.is_file():
                raise MapFormatError(f"{path} is missing (listed in the manifest)")
            found = sha256_file(path)
            if found != entry.sha256:
                raise MapFormatError(
                    f"{path}: checksum mismatch (sha256 {found[:16]}..., manifest "
                    f"{entry.sha256[:16]}...): the file is damaged"
                )
        for seg in m.segments:
            if self._store.digest(seg.start, seg.start + seg.rows) != seg.rows_sha256:
                raise MapFormatError(
                    f"{self.path / METADATA_NAME}: rows {seg.start}..{seg.start + seg.rows - 1}"
                    " do not match the manifest's checksum: the metadata was changed or damaged"
                )
        if m.index_file is not None:
            path = self._file(m.index_file.name)
            index = idx.read_index(path, self.index_spec, writable=False)
            idx.check_index(index, path, self.count, self.extractor_info.global_dim)

    # ---------------------------------------------------------------- writing
    def _require_writable(self) -> None:
        if not self.writable:
            raise MapFormatError(f"map {self.path} is open read-only")

    def _collect_garbage(self, superseded: frozenset[str] = frozenset()) -> None:
        """Remove files and metadata rows left by commits that never completed.

        ``superseded`` names files that the commit just made obsolete (the previous index);
        they are removed quietly, anything else is reported as left by an unfinished commit.
        """
        keep = set(self._manifest.data_files())
        for child in self.path.iterdir():
            stale = child.name.startswith(".manifest.json.tmp")
            if (stale or _DATA_FILE.match(child.name)) and child.name not in keep:
                if child.name in superseded:
                    log.debug("removing %s, superseded by this commit", child)
                else:
                    log.info("removing %s, left by an unfinished commit", child)
                child.unlink()
        dropped = self._store.drop_uncommitted()
        if dropped:
            log.info("removed %d metadata rows of an unfinished commit", dropped)

    def set_camera(self, camera: CameraModel) -> None:
        """Record the mapping camera's model in a new commit (once; another one is refused)."""
        self._require_writable()
        current = self.camera
        if current is not None:
            if not current.same_as(camera):
                raise MapFormatError(
                    f"map {self.path} was built with another camera model "
                    f"({current.width}x{current.height}, fx {current.fx:g}); one map holds "
                    "one camera")
            return
        self.load_index()  # the commit hands the in-memory index on
        self._commit(replace(self._manifest, modified=_now(), camera=camera.to_dict()),
                     self._index)

    def append(self, features: Features, places: Sequence[PlaceInfo],
               points: np.ndarray | None = None) -> range:
        """Add places with their features in one atomic commit; return their ids.

        ``points``: (n, L, 3) camera-frame points at the local features (NaN: no depth),
        stored as float16.
        """
        self._require_writable()
        info = self.extractor_info
        if len(features) != len(places):
            raise ValueError(f"{len(features)} feature rows for {len(places)} places")
        if len(places) == 0:
            return range(self.count, self.count)
        features.check_against(info)
        norms = np.linalg.norm(features.global_desc, axis=1)
        if not np.all(np.abs(norms - 1.0) < 1e-2):
            raise ValueError("global descriptors must be L2-normalised")
        mask = None
        if "mask" in self._kinds:
            mask = (
                features.local_mask
                if features.local_mask is not None
                else np.ones(features.local.shape[:2], np.bool_)
            )
        codec, codec_files = self.codec, self._manifest.local_codec
        if codec.needs_fit:  # the first commit of a PCA map fits its projection
            codec = codec.fitted(features.local, mask)
            codec_files = _write_state(self.path, codec.state(), CODEC_DIR)
        keypoints = features.keypoints if "keypoints" in self._kinds else None
        arrays = {"global": features.global_desc,
                  **codec.encode(features.local, mask, keypoints)}
        if points is not None:
            shape = (len(places), info.local_count, 3)
            if np.shape(points) != shape:
                raise ValueError(f"points are {np.shape(points)}, expected {shape}")
            # stored on the local features' stored grid (every stride-th row and column)
            stored_points = codec.subsample(np.asarray(points), None, None)[0]
            arrays["points"] = stored_points.astype(np.float16)
        generation = self._manifest.generation + 1
        files = {
            kind: write_array(self.path / segment_file_name(kind, generation), array)
            for kind, array in arrays.items()
        }
        index, spec = self._extended_index(features.global_desc)
        index_entry = self._write_index(index, generation)
        rows_sha = self._store.insert(places)
        segment = Segment(self.count, len(places), files, rows_sha)
        manifest = replace(
            self._manifest,
            generation=generation,
            modified=_now(),
            count=self.count + len(places),
            segments=(*self._manifest.segments, segment),
            index={"spec": spec.to_dict(), "file": index_entry.to_dict()},
            local_codec=codec_files,
        )
        self._commit(manifest, index)
        self._codec = codec
        self._open_segment(segment)
        return range(segment.start, segment.start + segment.rows)

    def rebuild_index(self, spec: idx.IndexSpec | None = None) -> None:
        """Rebuild (and retrain) the index, optionally of another kind, in a new commit."""
        self._require_writable()
        spec = spec or replace(self.index_spec, nlist=0)
        if self.count == 0:
            manifest = replace(self._manifest, index={"spec": spec.to_dict(), "file": None})
            self._commit(manifest, None)
            return
        index, spec = idx.build_index(spec, self.global_descriptors())
        self._commit_index(index, spec)

    def tune_index(self, target_recall: float) -> idx.TuneResult:
        """Choose, build and tune the index from the map's own descriptors, and commit it.

        See :func:`index.tune_index`; the settings and recall reached go to the manifest.
        """
        self._require_writable()
        if self.count == 0:
            raise MapFormatError(f"map {self.path} is empty: nothing to tune an index on")
        index, result = idx.tune_index(self.global_descriptors(), target_recall)
        self._commit_index(index, result.spec)
        return result

    def _commit_index(self, index: faiss.Index, spec: idx.IndexSpec) -> None:
        """Write ``index`` as the next generation's index file and commit it with ``spec``."""
        generation = self._manifest.generation + 1
        entry = self._write_index(index, generation)
        manifest = replace(
            self._manifest,
            generation=generation,
            modified=_now(),
            index={"spec": spec.to_dict(), "file": entry.to_dict()},
        )
        self._commit(manifest, index)

    def _extended_index(self, vectors: np.ndarray) -> tuple[faiss.Index, idx.IndexSpec]:
        """Return the current index plus ``vectors``, leaving the current one untouched."""
        spec = self.index_spec
        self.load_index()
        current = self._index
        if current is None:
            return idx.build_index(spec, vectors)
        extended = faiss.clone_index(current)
        extended.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return extended, spec

    def _write_index(self, index: faiss.Index, generation: int) -> FileEntry:
        path = self.path / f"index-{generation:06d}.faiss"
        idx.write_index(index, path)
        return FileEntry(path.name, path.stat().st_size, sha256_file(path))

    def _commit(self, manifest: Manifest, index: faiss.Index | None) -> None:
        """Switch to ``manifest`` (the commit point), then drop files it no longer lists."""
        fsync_dir(self.path)
        superseded = frozenset(self._manifest.data_files()) - frozenset(manifest.data_files())
        write_manifest(self.path, manifest)
        self._manifest = manifest
        self._store.count = manifest.count
        self._close_index_fd()  # the writer holds its index in memory from here on
        self._index = index
        self._search_index = None
        if index is not None:
            idx.configure_search(index, self.index_spec)
        self._collect_garbage(superseded)
