"""The map manifest (``manifest.json``): what a map holds and which files make up its state.

The manifest is the single switch of a commit: data files are written under new names first and
``manifest.json`` is then replaced atomically, so a reader sees the last complete commit. It also
carries the extractor identity, the descriptor sizes and dtypes, the place count (authoritative:
metadata rows with ``id >= count`` belong to an unfinished commit and are ignored) and the size
and sha256 of every data file, including the extractor's learned state (``extractor/*.npy``,
written once when the map is created; absent for extractors without state).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selavpr_ros.errors import ConfigError, MapFormatError
from selavpr_ros.extractors.base import ExtractorInfo
from selavpr_ros.map.fsutil import atomic_write_bytes

FORMAT_NAME = "selavpr_ros.place_map"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
METADATA_NAME = "places.sqlite"
ARRAY_KINDS = ("global", "local", "mask", "keypoints")
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
        return names

    def to_dict(self) -> dict[str, Any]:
        info = self.extractor
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
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
            },
            "count": self.count,
            "index": self.index,
            "metadata": {"file": METADATA_NAME},
            "segments": [s.to_dict() for s in self.segments],
            "extractor_state": {k: e.to_dict() for k, e in self.extractor_state.items()},
            "files": self.data_files(),
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
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MapFormatError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise MapFormatError(f"{path}: format is {found!r}, expected {FORMAT_NAME!r}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise MapFormatError(
            f"{path}: map format version {version!r} is not supported "
            f"(this selavpr_ros reads version {FORMAT_VERSION})"
        )
    try:
        extractor = ExtractorInfo.from_dict(data["extractor"])
        manifest = Manifest(
            map_id=str(data["map_id"]),
            created=str(data["created"]),
            modified=str(data["modified"]),
            generation=int(data["generation"]),
            map_frame=str(data["map_frame"]),
            extractor=extractor,
            local_dtype=str(data["local"]["dtype"]),
            count=int(data["count"]),
            index=dict(data["index"]),
            segments=tuple(Segment.from_dict(s) for s in data["segments"]),
            extractor_state={
                str(k): FileEntry.from_dict(v)
                for k, v in dict(data.get("extractor_state", {})).items()
            },
        )
    except (KeyError, TypeError, ValueError, ConfigError) as err:
        raise MapFormatError(f"{path}: missing or invalid field: {err!r}") from err
    _check_consistency(path, manifest)
    return manifest


def _check_consistency(path: Path, manifest: Manifest) -> None:
    if manifest.local_dtype not in ("float16", "float32"):
        raise MapFormatError(f"{path}: unsupported local dtype {manifest.local_dtype!r}")
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
