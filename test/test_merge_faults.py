"""``selavpr merge-maps`` on bad arguments and after a killed merge: one line, nothing spoiled.

An unwritable OUT, the same map given twice and OUT onto an input are refused in one line
(exit 2) before anything is written; a merge cleans up the working directories of merges that
were killed, but not that of a merge still running.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selavpr_ros.cli import main as cli
from selavpr_ros.map import PlaceMap
from test_merge_maps import drive
from test_train import one_line_error as refused


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time (to see nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_out_under_a_regular_file_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    a, b = drive(tmp_path / "a", 4, 1), drive(tmp_path / "b", 4, 2)
    (tmp_path / "notes.txt").write_text("not a folder\n")
    out = tmp_path / "notes.txt" / "ab"
    err = refused(["merge-maps", str(out), str(a), str(b), "--no-progress"], capsys)
    assert str(out) in err and "notes.txt is not a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "notes.txt"]


def test_out_in_a_read_only_directory_is_refused_in_one_line(tmp_path: Path) -> None:
    a, b = drive(tmp_path / "a", 4, 1), drive(tmp_path / "b", 4, 2)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:  # root writes anywhere; drop the capability that lets it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a directory unwritable")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        probe = subprocess.run([*prefix, sys.executable, "-c",
                                f"import os; os.mkdir({str(locked / 'probe')!r})"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            pytest.skip("setpriv could not take root's permission override away here")
    out = locked / "ab"
    proc = subprocess.run([*prefix, sys.executable, "-m", "selavpr_ros.cli", "merge-maps",
                           str(out), str(a), str(b), "--no-progress"],
                          capture_output=True, text=True, check=False, timeout=120)
    locked.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("selavpr: error: ") and proc.stderr.count("\n") == 1
    assert str(out) in proc.stderr and "Permission denied" in proc.stderr
    assert list(locked.iterdir()) == []


KILL_AFTER_WRITING = """
import os, signal, sys
from selavpr_ros.map import merge
write = merge._write_merged
def killed(tmp, *args):
    write(tmp, *args)
    os.kill(os.getpid(), signal.SIGKILL)  # as if killed before the rename
merge._write_merged = killed
merge.merge_maps(sys.argv[1], sys.argv[2:])
"""


def test_a_retry_removes_what_a_killed_merge_left(tmp_path: Path, capsys) -> None:
    a, b = drive(tmp_path / "a", 6, 1), drive(tmp_path / "b", 5, 2)
    out = tmp_path / "ab"
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_WRITING, str(out), str(a), str(b)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == -9, proc.stderr
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".ab.merge-")]
    assert len(left) == 1 and left[0].is_dir() and not out.exists()
    old = tmp_path / ".ab.merge-0ld0ld00"  # an earlier version's, without a lock file
    old.mkdir()
    (old / "metadata.sqlite").write_bytes(b"\0" * 1000)
    assert cli(["merge-maps", str(out), str(a), str(b), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "ab", "b"]
    with PlaceMap.open(out, verify=True) as merged:
        assert merged.count == 11


def test_a_running_merges_directory_is_kept(tmp_path: Path) -> None:
    a, b = drive(tmp_path / "a", 4, 1), drive(tmp_path / "b", 4, 2)
    busy = tmp_path / ".ab.merge-0000beef"
    busy.mkdir()
    (busy / "metadata.sqlite").write_bytes(b"rows")
    with open(busy / ".write.lock", "w") as lock:  # held as a running merge holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert cli(["merge-maps", str(tmp_path / "ab"), str(a), str(b), "--no-progress"]) == 0
    assert (busy / "metadata.sqlite").read_bytes() == b"rows"


def same_path(tmp_path: Path, a: Path) -> str:
    return str(a)


def through_a_link(tmp_path: Path, a: Path) -> str:
    (tmp_path / "link").symlink_to(a, target_is_directory=True)
    return str(tmp_path / "link")


def a_copy(tmp_path: Path, a: Path) -> str:
    shutil.copytree(a, tmp_path / "copy")
    return str(tmp_path / "copy")


@pytest.mark.parametrize("again", [same_path, through_a_link, a_copy])
def test_the_same_map_twice_is_refused(tmp_path: Path, capsys, again) -> None:
    a, b = drive(tmp_path / "a", 4, 1), drive(tmp_path / "b", 4, 2)
    second = again(tmp_path, a)
    out = tmp_path / "out"
    err = refused(["merge-maps", str(out), str(a), str(b), second, "--no-progress"], capsys)
    assert f"input maps 1 ({a}) and 3 ({second})" in err and "same map" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.merge-")]


@pytest.mark.parametrize("target, role", [("b", "is the input map 2"),
                                          (".", "holds the input map 1")])
def test_out_onto_an_input_is_refused_before_writing(tmp_path: Path, capsys, target: str,
                                                    role: str) -> None:
    a, b = drive(tmp_path / "a", 4, 1), drive(tmp_path / "b", 4, 2)
    before = tree(tmp_path)
    out = tmp_path / target
    err = refused(["merge-maps", str(out), str(a), str(b), "--no-progress"], capsys)
    assert f"merge-maps: refusing to write {out}: it {role} in use" in err
    assert tree(tmp_path) == before
