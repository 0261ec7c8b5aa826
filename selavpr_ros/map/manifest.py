"""The map manifest (``manifest.json``): what a map holds and which files make up its state.

The manifest is the single switch of a commit: data files are written under new names first and
``manifest.json`` is then replaced atomically, so a reader sees the last complete commit. It also
carries the extractor identity, the descriptor sizes and dtypes, the place count (authoritative:
metadata rows with ``id >= count`` belong to an unfinished commit and are ignored) and the size
and sha256 of every data file, including the extractor's learned state (``extractor/*.npy``,
written once when the map is created; absent for extractors without state).

Version 2 adds the stored form of the local features (``local.format``: dtype, PCA size, grid
stride; see ``local_format``), the files of a PCA projection (``local_codec``), a ``scale``
array per segment for int8 features, and the ``provenance`` of merged maps. Version 1 maps
(always fp16 or fp32, no codec) are read as they are; the next commit writes version 2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo
from selavpr_ros.map.fsutil import atomic_write_bytes
from selavpr_ros.map.index import IndexSpec
from selavpr_ros.map.local_format import CODEC_DIR, LocalFormat, format_from_dict
from selavpr_ros.map.paths import check_map_name, map_file

FORMAT_NAME = "selavpr_ros.place_map"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
METADATA_NAME = "places.sqlite"
ARRAY_KINDS = ("global", "local", "scale", "mask", "keypoints")
OPTIONAL_KINDS = ("points",)  # per segment, may be absent: 3-D points at local features
STATE_DIR = "extractor"


@dataclass(frozen=True)
class FileEntry:
    """One data file of the current state: its name in the map directory, size and sha256."""

    name: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileEntry:
        return cls(name=str(data["name"]), bytes=int(data["bytes"]), sha256=str(data["sha256"]))


@dataclass(frozen=True)
class Segment:
    """Places ``start .. start+rows-1``, written by one commit, with one file per array kind.

    ``rows_sha256`` is the digest of the segment's metadata rows (see ``metadata.rows_digest``).
    """

    start: int
    rows: int
    files: dict[str, FileEntry]
    rows_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "rows": self.rows,
            "files": {kind: entry.to_dict() for kind, entry in self.files.items()},
            "rows_sha256": self.rows_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        files = {k: FileEntry.from_dict(v) for k, v in data["files"].items()}
        return cls(int(data["start"]), int(data["rows"]), files, str(data["rows_sha256"]))


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json``; see read_manifest and write_manifest."""

    map_id: str
    created: str
    modified: str
    generation: int
    map_frame: str
    extractor: ExtractorInfo
    local_dtype: str
    count: int
    index: dict[str, Any]  # {"spec": IndexSpec dict, "file": FileEntry dict or None}
    segments: tuple[Segment, ...] = ()
    extractor_state: dict[str, FileEntry] = field(default_factory=dict)  # array name -> file
    format_version: int = FORMAT_VERSION
    camera: dict[str, Any] | None = None  # CameraModel.to_dict() of the map's camera, optional
    local_format: LocalFormat = LocalFormat()
    local_codec: dict[str, FileEntry] = field(default_factory=dict)  # e.g. the PCA projection
    provenance: tuple[dict[str, Any], ...] = ()  # merged maps: where each id range came from

    @property
    def index_file(self) -> FileEntry | None:
        entry = self.index.get("file")
        return FileEntry.from_dict(entry) if entry else None

    def data_files(self) -> list[str]:
        """Names of every file that makes up this state (besides manifest.json)."""
        names = [METADATA_NAME]
        names += [e.name for s in self.segments for e in s.files.values()]
        if self.index_file is not None:
            names.append(self.index_file.name)
        names += [e.name for e in self.extractor_state.values()]
        names += [e.name for e in self.local_codec.values()]
        return names

    def to_dict(self) -> dict[str, Any]:
        info, fmt = self.extractor, self.local_format
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "map_id": self.map_id,
            "created": self.created,
            "modified": self.modified,
            "generation": self.generation,
            "map_frame": self.map_frame,
            "extractor": info.to_dict(),
            "global": {"dim": info.global_dim, "dtype": "float32", "metric": "inner_product"},
            "local": {
                "count": info.local_count,
                "dim": info.local_dim,
                "grid": list(info.local_grid) if info.local_grid else None,
                "dtype": self.local_dtype,
                "mask": info.variable_local_count,
                "keypoints": info.has_keypoints,
                "format": fmt.to_dict(),
                "stored_count": fmt.stored_count(info),
                "stored_dim": fmt.stored_dim(info),
            },
            "local_codec": {k: e.to_dict() for k, e in self.local_codec.items()},
            "count": self.count,
            "index": self.index,
            "metadata": {"file": METADATA_NAME},
            "segments": [s.to_dict() for s in self.segments],
            "extractor_state": {k: e.to_dict() for k, e in self.extractor_state.items()},
            "provenance": list(self.provenance),
            "files": self.data_files(),
            **({"camera": self.camera} if self.camera is not None else {}),
        }


def manifest_path(directory: Path) -> Path:
    return Path(directory) / MANIFEST_NAME


def read_manifest(directory: Path) -> Manifest:
    """Read and check ``manifest.json``; raise MapFormatError saying what is wrong."""
    path = manifest_path(directory)
    if not Path(directory).is_dir():
        raise MapFormatError(f"place map {directory} does not exist or is not a directory")
    if not path.is_file():
        raise MapFormatError(
            f"{path} is missing: {directory} is not a place map (or its creation was interrupted)"
        )
    map_file(Path(directory), MANIFEST_NAME, str(path))  # not a link out of the map
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError as err:
        raise MapFormatError(f"{path} is nested too deeply to be a map manifest") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MapFormatError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise MapFormatError(f"{path}: format is {found!r}, expected {FORMAT_NAME!r}")
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise MapFormatError(
            f"{path}: map format version {version!r} is not supported "
            f"(this selavpr_ros reads versions {', '.join(map(str, READABLE_VERSIONS))})"
        )
    manifest = _parse(path, data)
    _check_consistency(path, manifest)
    return manifest


class _Fields:
    """Typed access to a JSON object of the manifest: every wrong shape is a MapFormatError.

    This is the one place where the manifest's schema is checked; ``where`` names the field
    (``segments[2].files.local``) in the message.
    """

    def __init__(self, path: Path, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            what = f"field {where!r}" if where else "the manifest"
            raise MapFormatError(f"{path}: {what} must be an object, got {type(data).__name__}")
        self.path, self.data, self.where = path, data, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str) -> Any:
        if key not in self.data:
            raise MapFormatError(f"{self.path}: missing field {self._name(key)!r}")
        return self.data[key]

    def _bad(self, key: str, value: Any, what: str) -> MapFormatError:
        return MapFormatError(
            f"{self.path}: field {self._name(key)!r} must be {what}, got {value!r:.80}"
        )

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise self._bad(key, value, "a string")
        return value

    def integer(self, key: str, minimum: int = 0) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self._bad(key, value, f"an integer >= {minimum}")
        return value

    def sha256(self, key: str) -> str:
        value = self.text(key)
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise self._bad(key, value, "a sha256 hex digest")
        return value

    def obj(self, key: str) -> _Fields:
        return _Fields(self.path, self._get(key), self._name(key))

    def items(self) -> list[tuple[str, Any]]:
        return list(self.data.items())


def _file_entry(path: Path, data: Any, where: str) -> FileEntry:
    fields = _Fields(path, data, where)
    name = check_map_name(fields.text("name"), f"{path}: {where}")
    return FileEntry(name, fields.integer("bytes"), fields.sha256("sha256"))


def _segment(path: Path, data: Any, where: str) -> Segment:
    fields = _Fields(path, data, where)
    files = {
        kind: _file_entry(path, entry, f"{where}.files.{kind}")
        for kind, entry in fields.obj("files").items()
    }
    return Segment(
        fields.integer("start"), fields.integer("rows", 1), files, fields.sha256("rows_sha256")
    )


def _extractor(path: Path, data: Any) -> ExtractorInfo:
    fields = _Fields(path, data, "extractor")
    fields.text("name")
    fields.text("fingerprint")
    for key in ("global_dim", "local_count", "local_dim"):
        fields.integer(key, 1)
    for key in ("variable_local_count", "has_keypoints"):
        if not isinstance(data.get(key, False), bool):
            raise fields._bad(key, data[key], "true or false")
    grid = data.get("local_grid")
    if grid is not None and (
        not isinstance(grid, list)
        or len(grid) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid)
    ):
        raise fields._bad("local_grid", grid, "null or two positive integers")
    try:
        return ExtractorInfo.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError, ConfigError) as err:
        raise MapFormatError(f"{path}: invalid field 'extractor': {err}") from err


def _index(path: Path, data: Any) -> dict[str, Any]:
    fields = _Fields(path, data, "index")
    spec = fields.obj("spec")
    for key, value in spec.items():
        default = getattr(IndexSpec, key, None)
        if default is not None and (
            type(value) is not type(default)  # bool is not int, and int is not bool
        ):
            raise spec._bad(key, value, f"of type {type(default).__name__}")
    try:
        IndexSpec.from_dict(spec.data)
    except (TypeError, ValueError, ConfigError) as err:
        raise MapFormatError(f"{path}: invalid field 'index.spec': {err}") from err
    entry = fields._get("file")
    file = None if entry is None else _file_entry(path, entry, "index.file").to_dict()
    return {"spec": dict(fields.data["spec"]), "file": file}


def _parse(path: Path, data: dict[str, Any]) -> Manifest:
    """Build a Manifest from the JSON object, checking every field's type and range."""
    fields = _Fields(path, data, "")
    segments = fields._get("segments")
    if not isinstance(segments, list):
        raise fields._bad("segments", segments, "a list")
    state = data.get("extractor_state", {})
    local = fields.obj("local")
    dtype = local.text("dtype")
    if data["format_version"] == 1:  # before compact formats: as stored, nothing else
        fmt = LocalFormat(dtype) if dtype in ("float16", "float32") else None
        codec_data: Any = {}
        provenance: Any = []
    else:
        fmt = format_from_dict(local.obj("format").data, f"{path}: field 'local.format'")
        codec_data = data.get("local_codec", {})
        provenance = data.get("provenance", [])
        if not isinstance(provenance, list) or not all(isinstance(p, dict) for p in provenance):
            raise fields._bad("provenance", provenance, "a list of objects")
    if fmt is None or fmt.dtype != dtype:
        raise MapFormatError(f"{path}: unsupported local dtype {dtype!r}")
    return Manifest(
        map_id=fields.text("map_id"),
        created=fields.text("created"),
        modified=fields.text("modified"),
        generation=fields.integer("generation"),
        map_frame=fields.text("map_frame"),
        extractor=_extractor(path, data.get("extractor")),
        local_dtype=dtype,
        count=fields.integer("count"),
        index=_index(path, data.get("index")),
        segments=tuple(_segment(path, s, f"segments[{i}]") for i, s in enumerate(segments)),
        extractor_state={
            str(key): _file_entry(path, entry, f"extractor_state.{key}")
            for key, entry in _Fields(path, state, "extractor_state").items()
        },
        camera=_camera(path, data.get("camera")),
        format_version=int(data["format_version"]),
        local_format=fmt,
        local_codec={
            str(key): _file_entry(path, entry, f"local_codec.{key}")
            for key, entry in _Fields(path, codec_data, "local_codec").items()
        },
        provenance=tuple(provenance),
    )


def _camera(path: Path, data: Any) -> dict[str, Any] | None:
    """Check the optional ``camera`` key (a CameraModel.to_dict() form)."""
    if data is None:
        return None
    from selavpr_ros.geometry.camera import CameraModel, CameraModelError

    try:
        return CameraModel.from_dict(data).to_dict()
    except CameraModelError as err:
        raise MapFormatError(f"{path}: invalid field 'camera': {err}") from err


def _check_consistency(path: Path, manifest: Manifest) -> None:
    fmt, info = manifest.local_format, manifest.extractor
    try:
        fmt.check(info)
    except ConfigError as err:
        raise MapFormatError(f"{path}: local format {fmt.name}: {err}") from err
    if fmt.pca_dim and manifest.count and set(manifest.local_codec) != {"pca_components"}:
        raise MapFormatError(f"{path}: local format {fmt.name} needs its PCA projection file")
    for key, entry in manifest.local_codec.items():
        if entry.name != f"{CODEC_DIR}/{key}.npy":
            raise MapFormatError(f"{path}: local codec file {entry.name!r} is not "
                                 f"{CODEC_DIR}/{key}.npy")
    start = 0
    for seg in manifest.segments:
        if seg.start != start or seg.rows <= 0:
            raise MapFormatError(
                f"{path}: segment starting at {seg.start} with {seg.rows} rows does not follow "
                f"the previous segments (expected start {start})"
            )
        start += seg.rows
    if start != manifest.count:
        raise MapFormatError(
            f"{path}: segments hold {start} places but count is {manifest.count}"
        )
    if manifest.count > 0 and manifest.index_file is None:
        raise MapFormatError(f"{path}: map has {manifest.count} places but no index file")
    for key, entry in manifest.extractor_state.items():
        if entry.name != state_file_name(key):
            raise MapFormatError(
                f"{path}: extractor state {key!r} is in {entry.name!r}, expected "
                f"{state_file_name(key)!r}"
            )


def state_file_name(key: str) -> str:
    """Where the extractor state array ``key`` lives, relative to the map directory."""
    return f"{STATE_DIR}/{key}.npy"


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Commit ``manifest`` atomically (tmp file, fsync, rename, fsync directory)."""
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(manifest_path(directory), text.encode("utf-8"))
