"""Names inside a map directory, resolved so that a map never reads or writes outside itself.

A map is a file a user downloads: every file name its manifest lists is untrusted. A name must
be a plain relative path (no ``..``, not absolute, no empty or ``.`` parts, no backslashes) and
must resolve, symbolic links followed, to a path inside the map directory.
"""

from __future__ import annotations

from pathlib import Path

from selavpr_ros.errors import MapFormatError


def check_map_name(name: str, where: str) -> str:
    """Return ``name`` if it is a plain relative name inside a map, else raise MapFormatError."""
    if (
        not isinstance(name, str)
        or not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise MapFormatError(
            f"{where}: file name {name!r} is not a plain name inside the map directory"
        )
    return name


def map_file(directory: Path, name: str, where: str | None = None) -> Path:
    """Return the path of ``name`` in the map ``directory``; refuse names that leave it.

    Raises:
        MapFormatError: the name is absolute, has ``..``, or resolves (through a symbolic
            link) to a path outside the map directory.
    """
    where = where or str(Path(directory) / "manifest.json")
    check_map_name(name, where)
    path = Path(directory) / name
    root = Path(directory).resolve()
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise MapFormatError(f"{where}: cannot resolve {name!r}: {err}") from err
    if resolved != root and root not in resolved.parents:
        raise MapFormatError(
            f"{where}: {name!r} leads outside the map directory (to {resolved})"
        )
    return path
