"""Joining place maps built separately (drives processed on several machines) into one map.

The inputs must agree on everything that makes their places comparable: the extractor (name,
weights fingerprint, sizes, re-rank settings, learned state), the map frame, and the local
format with its codec (a PCA projection is fitted per map, so PCA maps merge only when built
with the same projection: ``build-map --local-codec-from``). Places keep their order (all of
IN1's, then IN2's, ...) with ids renumbered; metadata rows (stamps, poses, sources) are copied
as they are, and the manifest's ``provenance`` says which id range came from which map.

Segment files are copied byte for byte, each checked against its input's sha256 while it is
copied, so a damaged input is refused rather than spread. The index is rebuilt over all global
descriptors with the first input's index settings (re-tuned when they were tuned). Atomic like
a commit: the map is written under a hidden temporary name next to OUT and renamed to OUT
when complete; a failure removes the temporary directory and leaves nothing at OUT. A merge
that is killed cannot clean up: the next merge into OUT removes its directory (unless locked
by a merge still running).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from selavpr_ros.errors import MapFormatError
from selavpr_ros.map import index as idx
from selavpr_ros.map.fsutil import WriteLock, fsync_dir, refuse_writing_onto, sha256_file
from selavpr_ros.map.manifest import METADATA_NAME, FileEntry, Manifest, Segment, write_manifest
from selavpr_ros.map.metadata import MetadataStore
from selavpr_ros.map.place_map import PlaceMap
from selavpr_ros.map.segments import segment_file_name

COPY_BLOCK = 8 * 2**20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergeSummary:
    """What a merge wrote: places per input, the index, and how long it took."""

    path: Path
    places: int
    inputs: tuple[tuple[str, int], ...]  # (input path, places)
    index_kind: str
    seconds: float


def _differs(name: str, a: object, b: object) -> str | None:
    return None if a == b else f"{name} {b!r} (first map: {a!r})"


def check_mergeable(maps: list[PlaceMap]) -> None:
    """Raise MapFormatError (one line) unless every map can be joined with the first."""
    first = maps[0]
    fm = first.manifest
    for other in maps[1:]:
        om = other.manifest
        a, b = fm.extractor, om.extractor
        problems = [
            _differs("extractor", a.name, b.name),
            _differs("fingerprint", a.fingerprint, b.fingerprint),
            None if a == b or a.name != b.name or a.fingerprint != b.fingerprint else
            f"extractor settings {b.to_dict()} (first map: {a.to_dict()})",
            _differs("map frame", fm.map_frame, om.map_frame),
            _differs("local format", fm.local_format.name, om.local_format.name),
            _differs("camera model", fm.camera, om.camera),
            _differs("extractor state",
                     {k: e.sha256 for k, e in fm.extractor_state.items()},
                     {k: e.sha256 for k, e in om.extractor_state.items()}),
        ]
        if fm.local_format == om.local_format and fm.local_codec and om.local_codec and (
            {k: e.sha256 for k, e in fm.local_codec.items()}
            != {k: e.sha256 for k, e in om.local_codec.items()}
        ):
            problems.append("PCA projection (fitted on each map's own features; build the "
                            "maps with --local-codec-from one of them)")
        found = [p for p in problems if p]
        if found:
            raise MapFormatError(
                f"cannot merge {other.path} into a map with {first.path}: it has "
                + "; ".join(found)
            )


def _copy_checked(source: Path, target: Path, entry: FileEntry) -> FileEntry:
    """Copy ``source`` to ``target`` (fsynced), checking the input manifest's sha256."""
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as dst:
        while block := src.read(COPY_BLOCK):
            digest.update(block)
            dst.write(block)
        dst.flush()
        os.fsync(dst.fileno())
    if digest.hexdigest() != entry.sha256:
        raise MapFormatError(
            f"{source}: checksum mismatch (sha256 {digest.hexdigest()[:16]}..., manifest "
            f"{entry.sha256[:16]}...): the input map is damaged"
        )
    return FileEntry(target.name, target.stat().st_size, entry.sha256)


def _skip_npy_header(f: BinaryIO) -> None:
    """Move ``f`` past the ``.npy`` magic and header (to the first array byte)."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
    except ValueError as err:
        raise MapFormatError(f"{f.name} is not a readable .npy array: {err}") from err


def _join_segments(source: PlaceMap, kind: str, target: Path) -> FileEntry:
    """Write all of ``source``'s ``kind`` arrays as one ``.npy``, checking every input's sha256.

    One segment per input map, so the merged map opens as fast as a freshly built one.
    """
    segments = source.manifest.segments
    entries = [seg.files.get(kind) for seg in segments]  # ``points`` may be absent: NaN rows
    present = next(e for e in entries if e is not None)
    first = np.load(source._file(present.name), mmap_mode="r", allow_pickle=False)
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
              "shape": (source.count, *first.shape[1:])}
    row_shape, row_dtype = first.shape[1:], first.dtype
    del first
    out_digest = hashlib.sha256()
    with open(target, "wb") as dst:
        np.lib.format.write_array_header_2_0(dst, header)
        dst.flush()
        with open(target, "rb") as head:
            out_digest.update(head.read())
        for seg, entry in zip(segments, entries, strict=True):  # read once, checked
            if entry is None:
                block = np.full((seg.rows, *row_shape), np.nan, row_dtype).tobytes()
                out_digest.update(block)
                dst.write(block)
                continue
            path = source._file(entry.name)
            digest = hashlib.sha256()
            with open(path, "rb") as src:
                _skip_npy_header(src)
                body = src.tell()
                src.seek(0)
                digest.update(src.read(body))
                while block := src.read(COPY_BLOCK):
                    digest.update(block)
                    out_digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != entry.sha256:
                raise MapFormatError(
                    f"{path}: checksum mismatch (sha256 {digest.hexdigest()[:16]}..., manifest "
                    f"{entry.sha256[:16]}...): the input map is damaged"
                )
        dst.flush()
        os.fsync(dst.fileno())
    return FileEntry(target.name, target.stat().st_size, out_digest.hexdigest())


def _check_rows(source: PlaceMap) -> None:
    """Refuse an input whose metadata rows do not match its manifest's digests."""
    for seg in source.manifest.segments:
        if source._store.digest(seg.start, seg.start + seg.rows) != seg.rows_sha256:
            raise MapFormatError(
                f"{source._file(METADATA_NAME)}: rows {seg.start}..{seg.start + seg.rows - 1} "
                "do not match the manifest's checksum: the input map is damaged"
            )


def _copy_state(source: PlaceMap, target: Path, entries: dict[str, FileEntry]
                ) -> dict[str, FileEntry]:
    copied = {}
    for key, entry in entries.items():
        dst = target / entry.name
        dst.parent.mkdir(exist_ok=True)
        size = _copy_checked(source._file(entry.name), dst, entry).bytes
        copied[key] = FileEntry(entry.name, size, entry.sha256)
        fsync_dir(dst.parent)
    return copied


def _os_error(out: Path, err: OSError) -> MapFormatError:
    """Return a one-line refusal naming ``out`` and what the file system said."""
    where = f" ({err.filename})" if err.filename else ""
    return MapFormatError(f"cannot merge into {out}: {err.strerror or err}{where}")


def _check_inputs(out: Path, inputs: list[str | Path]) -> None:
    """Refuse OUT onto (or around) an input, a map given twice, or OUT that cannot be a folder."""
    refuse_writing_onto(out, {f"input map {i}": p for i, p in enumerate(inputs, 1)},
                        "merge-maps")
    seen: dict[Path, int] = {}
    for i, path in enumerate(inputs, 1):
        first = seen.setdefault(Path(path).resolve(), i)
        if first != i:
            raise MapFormatError(
                f"input maps {first} ({inputs[first - 1]}) and {i} ({path}) are the same map: "
                "its places would be merged twice")
    for parent in out.parents:  # the first one that exists must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise MapFormatError(f"cannot merge into {out}: {parent} is not a directory")
            break
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MapFormatError(f"cannot merge into {out}: it exists and is not empty")


def _check_distinct(maps: list[PlaceMap], inputs: list[str | Path]) -> None:
    """Refuse two inputs with one ``map_id`` (a copy of one map): its places would be doubled."""
    seen: dict[str, int] = {}
    for i, m in enumerate(maps, 1):
        first = seen.setdefault(m.map_id, i)
        if first != i:
            raise MapFormatError(
                f"input maps {first} ({inputs[first - 1]}) and {i} ({inputs[i - 1]}) are the "
                f"same map (map_id {m.map_id}, a copy?): its places would be merged twice")


def remove_leftovers(out: Path) -> None:
    """Remove the working folders ``.OUT.merge-*`` of merges that were killed before renaming.

    A running merge holds the lock of its folder, so only the folders of dead ones go; tens of
    MB each would otherwise pile up next to OUT with every retry.
    """
    prefix = f".{out.name}.merge-"
    for old in out.parent.iterdir():
        if not old.name.startswith(prefix) or old.is_symlink() or not old.is_dir():
            continue
        lock = WriteLock(old)
        try:
            lock.acquire()
        except MapFormatError:
            continue  # a merge into the same OUT is running
        except OSError as err:
            log.warning("cannot remove %s, left by a killed merge: %s", old, err)
            continue
        try:
            shutil.rmtree(old)
            log.info("removed %s, left by a merge that did not finish", old)
        except OSError as err:
            log.warning("cannot remove %s, left by a killed merge: %s", old, err)
        finally:
            lock.release()


def merge_maps(out: str | Path, inputs: list[str | Path], *, progress: bool = False
               ) -> MergeSummary:
    """Join the maps ``inputs`` (in order) into a new map at ``out``; see the module docstring.

    Raises:
        MapFormatError: fewer than two inputs, ``out`` exists, is an input or cannot be
            written, an input is given twice or is damaged, or the inputs differ in
            extractor, fingerprint, frame or local format.
    """
    start_time = time.perf_counter()
    out = Path(out)
    if len(inputs) < 2:
        raise MapFormatError("merge-maps needs at least two input maps")
    _check_inputs(out, inputs)
    with ExitStack() as stack:
        maps = [stack.enter_context(PlaceMap.open(p)) for p in inputs]
        _check_distinct(maps, inputs)
        check_mergeable(maps)
        tmp = out.parent / f".{out.name}.merge-{uuid.uuid4().hex[:8]}"
        lock = WriteLock(tmp)  # tells a later merge that this folder is in use
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(out)
            tmp.mkdir()
            lock.acquire()
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _os_error(out, err) from err
        try:
            manifest = _write_merged(tmp, maps, progress)
            if out.exists():
                out.rmdir()  # an empty directory given as OUT
            os.rename(tmp, out)
            fsync_dir(out.parent)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _os_error(out, err) from err
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            lock.release()
    return MergeSummary(
        path=out, places=manifest.count,
        inputs=tuple((str(m.path), m.count) for m in maps),
        index_kind=idx.IndexSpec.from_dict(manifest.index["spec"]).kind,
        seconds=time.perf_counter() - start_time,
    )


def _write_merged(tmp: Path, maps: list[PlaceMap], progress: bool) -> Manifest:
    """Write the merged map's files and manifest into ``tmp``; return the manifest."""
    from tqdm import tqdm

    first = maps[0]
    fm = first.manifest
    MetadataStore.create(tmp / METADATA_NAME)
    store = MetadataStore(tmp / METADATA_NAME, 0, writable=True)
    try:
        state = _copy_state(first, tmp, fm.extractor_state)
        codec = _copy_state(first, tmp, fm.local_codec)
        segments: list[Segment] = []
        provenance: list[dict[str, Any]] = []
        generation = offset = 0
        total = sum(len(m.manifest.segments) for m in maps)
        bar = tqdm(total=total, unit="segment", desc="merge", disable=not progress)
        for m in maps:
            provenance.append({"map_id": m.map_id, "path": str(m.path), "first_id": offset,
                               "places": m.count, "created": m.manifest.created,
                               "merged_from": list(m.manifest.provenance)})
            if not m.count:
                continue
            generation += 1
            kinds = dict.fromkeys(k for seg in m.manifest.segments for k in seg.files)
            files = {kind: _join_segments(m, kind, tmp / segment_file_name(kind, generation))
                     for kind in kinds}
            bar.update(len(m.manifest.segments))
            _check_rows(m)
            rows_sha = store.copy_rows(m._file(METADATA_NAME), m.count)
            segments.append(Segment(offset, m.count, files, rows_sha))
            store.count += m.count
            offset += m.count
        bar.close()
        vectors = np.concatenate([m.global_descriptors() for m in maps if m.count])
        spec = replace(first.index_spec, nlist=0)
        if spec.target_recall:  # a tuned index is tuned again for the merged map
            index, tuned = idx.tune_index(vectors, spec.target_recall)
            spec = tuned.spec
        else:
            index, spec = idx.build_index(spec, vectors)
        generation += 1
        index_path = tmp / f"index-{generation:06d}.faiss"
        idx.write_index(index, index_path)
        index_entry = FileEntry(index_path.name, index_path.stat().st_size,
                                sha256_file(index_path))
    finally:
        store.close()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = Manifest(
        map_id=str(uuid.uuid4()), created=now, modified=now, generation=generation,
        map_frame=fm.map_frame, extractor=fm.extractor, local_dtype=fm.local_dtype,
        count=offset, index={"spec": spec.to_dict(), "file": index_entry.to_dict()},
        segments=tuple(segments), extractor_state=state, local_format=fm.local_format,
        local_codec=codec, provenance=tuple(provenance), camera=fm.camera,
    )
    fsync_dir(tmp)
    write_manifest(tmp, manifest)
    return manifest
