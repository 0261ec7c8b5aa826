"""Small file-system helpers for crash-safe commits: fsync, atomic replace, checksums, locks."""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from types import TracebackType

from selavpr_ros.errors import MapFormatError


def fsync_dir(path: Path) -> None:
    """Make a rename or file creation in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sha256_file(path: Path, block: int = 8 * 2**20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class WriteLock:
    """An exclusive advisory lock on ``<map>/.write.lock``: one writer per map at a time."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / ".write.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise MapFormatError(
                f"map {self._path.parent} is already open for writing by another process"
            ) from err
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriteLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def refuse_writing_onto(out: str | os.PathLike[str], in_use: dict[str, str | os.PathLike[str]],
                        writer: str) -> None:
    """Refuse to write a map at ``out`` when it is (or holds) a map that is read to make it.

    ``in_use`` names each map being read (``{"prior_map": path}``); writing onto one would
    replace the map the writer still reads. Paths are compared after resolving links.
    """
    target = Path(out).expanduser().resolve()
    for role, path in in_use.items():
        if not str(path):
            continue
        source = Path(path).expanduser().resolve()
        if target == source or source.is_relative_to(target):
            what = "is" if target == source else "holds"  # OUT a folder around the map
            raise MapFormatError(
                f"{writer}: refusing to write {out}: it {what} the {role} in use ({path}); "
                "write the new map elsewhere")
