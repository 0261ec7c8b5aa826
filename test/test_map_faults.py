"""Malformed and hostile maps: every one is refused in one line that names the file and the fault.

A map is a file a user downloads. Each case below edits a real map on disk the way a damaged or
crafted download would, then checks ``PlaceMap.open`` (with and without ``verify``) and the
``selavpr map-info`` command (exit 2, one line, no traceback).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selavpr_ros.cli import main as cli
from selavpr_ros.errors import MapFormatError
from selavpr_ros.map import IndexSpec, PlaceMap
from test_map import INFO, build, make_features, make_places

Edit = Callable[[dict[str, Any], Path], None]


def _map(tmp_path: Path, name: str = "m.selavpr") -> Path:
    path = tmp_path / name
    build(path, [5, 4]).close()
    return path


def _edit_manifest(path: Path, edit: Edit) -> None:
    manifest = path / "manifest.json"
    data = json.loads(manifest.read_text())
    edit(data, path)
    manifest.write_text(json.dumps(data))


def _refused(path: Path, match: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused by open, open(verify) and map-info, each in one line naming ``match``."""
    for verify in (False, True):
        with pytest.raises(MapFormatError, match=match) as info:
            with PlaceMap.open(path, verify=verify) as pm:
                pm.search(make_features(0, 1).global_desc, 3)  # loads the index
        assert "\n" not in str(info.value)
    capsys.readouterr()
    assert cli(["map-info", str(path), "--verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("selavpr: error: "), err
    assert "Traceback" not in err


def _set(keys: list[Any], value: Any) -> Edit:
    def edit(data: dict[str, Any], _path: Path) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


def _delete(keys: list[Any]) -> Edit:
    def edit(data: dict[str, Any], _path: Path) -> None:
        target = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return edit


MALFORMED: dict[str, tuple[Edit, str]] = {
    "index entry without bytes": (_delete(["index", "file", "bytes"]), "index.file.bytes"),
    "segment file without sha256": (
        _delete(["segments", 0, "files", "local", "sha256"]), "segments\\[0\\].files.local"),
    "count is text": (_set(["count"], "9"), "'count' must be an integer"),
    "negative count": (_set(["count"], -1), "'count' must be an integer >= 0"),
    "count is a bool": (_set(["count"], True), "'count' must be an integer"),
    "rows is zero": (_set(["segments", 1, "rows"], 0), "segments\\[1\\].rows"),
    "segments is an object": (_set(["segments"], {}), "'segments' must be a list"),
    "segment is a number": (_set(["segments", 0], 7), "'segments\\[0\\]' must be an object"),
    "files is a list": (_set(["segments", 0, "files"], []), "segments\\[0\\].files"),
    "bytes is negative": (_set(["index", "file", "bytes"], -5), "index.file.bytes"),
    "bytes is a float": (_set(["index", "file", "bytes"], 1.5), "index.file.bytes"),
    "name is a number": (_set(["segments", 0, "files", "global", "name"], 3), "name"),
    "sha256 not hex": (_set(["index", "file", "sha256"], "x" * 64), "sha256"),
    "no extractor": (_delete(["extractor"]), "extractor"),
    "extractor dim text": (_set(["extractor", "global_dim"], "32"), "global_dim"),
    "extractor dim zero": (_set(["extractor", "local_dim"], 0), "local_dim"),
    "grid not a pair": (_set(["extractor", "local_grid"], [16]), "local_grid"),
    "unknown index kind": (_set(["index", "spec", "kind"], "lsh"), "index.spec"),
    "unknown index setting": (_set(["index", "spec", "evil"], 1), "index.spec"),
    "index spec is a list": (_set(["index", "spec"], []), "index.spec"),
    "local is a string": (_set(["local"], "float16"), "'local' must be an object"),
    "map_id is null": (_set(["map_id"], None), "map_id"),
    "generation negative": (_set(["generation"], -3), "generation"),
    "extractor state is a list": (_set(["extractor_state"], [1]), "extractor_state"),
    "count beyond segments": (_set(["count"], 10), "segments hold 9 places but count is 10"),
    "count astronomically large": (_set(["count"], 10**30), "segments hold 9 places"),
    "rerank is a list": (_set(["extractor", "rerank"], ["ratio"]), "extractor"),
    "rerank ratio is text": (_set(["extractor", "rerank", "ratio"], "x"), "extractor"),
    "unknown extractor field": (_set(["extractor", "colour"], "red"), "extractor"),
    "flag is text": (_set(["extractor", "has_keypoints"], "yes"), "has_keypoints"),
    "nprobe is text": (_set(["index", "spec", "nprobe"], "64"), "index.spec.nprobe"),
    "use_gpu is a number": (_set(["index", "spec", "use_gpu"], 1), "index.spec.use_gpu"),
    "index file is a string": (_set(["index", "file"], "index-000002.faiss"), "index.file"),
    "segment is null": (_set(["segments", 1], None), "segments\\[1\\]"),
    "bytes too large": (_set(["index", "file", "bytes"], 10**30), "manifest says"),
    "local dtype float64": (_set(["local", "dtype"], "float64"), "unsupported local dtype"),
    "manifest is empty": (lambda d, _p: d.clear(), "format is None"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_is_refused_in_one_line(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    edit, match = MALFORMED[case]
    _edit_manifest(path, edit)
    _refused(path, match, capsys)


def test_deeply_nested_manifest_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    depth = 100_000
    text = json.loads((path / "manifest.json").read_text())
    text["map_frame"] = "@"
    nested = json.dumps(text).replace('"@"', "[" * depth + "]" * depth)
    (path / "manifest.json").write_text(nested)
    _refused(path, "nested too deeply", capsys)


def test_index_of_another_kind_than_the_manifest_says_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an HNSW index file under a manifest that says ivf (and its correct size and checksum)
    path = tmp_path / "h.selavpr"
    build(path, [30], IndexSpec(kind="hnsw")).close()
    _edit_manifest(path, _set(["index", "spec", "kind"], "ivf"))
    _refused(path, r"index-000001.faiss is a faiss IndexHNSWFlat .* 'ivf'", capsys)
    # and a flat index under a manifest that says hnsw
    flat = _map(tmp_path, "f.selavpr")
    _edit_manifest(flat, _set(["index", "spec", "kind"], "hnsw"))
    _refused(flat, r"is a faiss IndexFlat.* 'hnsw'", capsys)


# ------------------------------------------------------------------ paths out of the map
def _outside(tmp_path: Path) -> Path:
    """Make a folder next to the map."""
    outside = tmp_path / "elsewhere"
    outside.mkdir(exist_ok=True)
    return outside


@pytest.mark.parametrize(("how", "which"), [
    (how, which) for how in ("dotdot", "absolute", "symlink", "symlinked_dir")
    for which in ("segment", "index")] + [("symlink", "metadata")])  # its name is fixed
def test_names_leading_out_of_the_map_are_refused(
        tmp_path: Path, how: str, which: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    outside = _outside(tmp_path)
    data = json.loads((path / "manifest.json").read_text())
    name = {"segment": data["segments"][0]["files"]["global"]["name"],
            "index": data["index"]["file"]["name"], "metadata": "places.sqlite"}[which]
    # the file really exists outside, byte for byte: only the path is wrong
    os.replace(path / name, outside / name)
    if how == "symlink":
        (path / name).symlink_to(outside / name)
        new_name = name
    elif how == "symlinked_dir":
        (path / "sub").symlink_to(outside, target_is_directory=True)
        new_name = f"sub/{name}"
    elif how == "dotdot":
        new_name = f"../elsewhere/{name}"
    else:
        new_name = str(outside / name)
    if new_name != name:
        if which == "segment":
            data["segments"][0]["files"]["global"]["name"] = new_name
        else:
            data["index"]["file"]["name"] = new_name
        (path / "manifest.json").write_text(json.dumps(data))
    _refused(path, "leads outside the map directory|not a plain name inside the map",
             capsys)


def test_a_manifest_linked_from_outside_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    outside = _outside(tmp_path)
    os.replace(path / "manifest.json", outside / "manifest.json")
    (path / "manifest.json").symlink_to(outside / "manifest.json")
    _refused(path, "leads outside the map directory", capsys)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_an_index_that_is_not_a_regular_file_is_refused(
        tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    name = json.loads((path / "manifest.json").read_text())["index"]["file"]["name"]
    (path / name).unlink()
    if kind == "fifo":
        os.mkfifo(path / name)  # opening it for reading would wait for a writer forever
    else:
        (path / name).mkdir()
    _refused(path, "not a regular file", capsys)


def test_extractor_state_name_out_of_the_map_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.selavpr"
    PlaceMap.create(path, INFO, extractor_state={"w": np.ones(3, np.float32)}).close()
    _edit_manifest(path, _set(["extractor_state", "w", "name"], "../../etc/passwd"))
    _refused(path, "not a plain name inside the map", capsys)


# ------------------------------------------------------------------ SQLite file names
@pytest.mark.parametrize("name", ["h#ash.selavpr", "q?mode=rwc.selavpr", "p%41ct.selavpr",
                                  "sp ace#?%.selavpr"])
def test_map_paths_with_uri_characters_open_the_right_file(
        tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / name
    build(path, [5]).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    with PlaceMap.open(path) as pm:
        assert pm.count == 5
        assert pm.place(3).source_ref == "3"
        opened = pm._store._db.execute("PRAGMA database_list").fetchone()[2]
        assert Path(opened) == (path / "places.sqlite").resolve()
    # a map on a read-only file system is opened with mode=ro, which must survive the name
    # (as root, file permissions cannot show it: the check is what the store asks for)
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    with PlaceMap.open(path) as pm:
        assert pm.place(4).source_ref == "4"
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            pm._store._db.execute("DELETE FROM places")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    with PlaceMap.open(Path(name)) as pm:  # a relative path with the same characters
        assert pm.count == 5
    with PlaceMap.open(path, writable=True) as pm:
        pm.append(make_features(5, 2), make_places(5, 2))
    with PlaceMap.open(path, verify=True) as pm:
        assert pm.count == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray files created


# ------------------------------------------------------------------ damaged metadata values
def test_text_in_a_stamp_column_is_refused_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _map(tmp_path)
    db = sqlite3.connect(path / "places.sqlite")
    with db:
        db.execute("UPDATE places SET stamp_ns = 'yesterday' WHERE id = 2")
    db.close()
    with PlaceMap.open(path) as pm, pytest.raises(MapFormatError, match="place 2 .*invalid"):
        pm.place(2)
    capsys.readouterr()
    assert cli(["map-info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "places.sqlite" in err, err
