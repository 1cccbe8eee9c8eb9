"""Atomic writes leave outputs with the umask's mode (as ``open``/``mkdir`` would), not tempfile's 0600."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from unildiff.utils.atomic import (
    atomic_dir,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    current_umask,
)


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    assert current_umask() == umask
    expected = 0o666 & ~umask
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", b"x")) == expected
    assert _mode(atomic_write_json(tmp_path / "b.json", {"a": 1})) == expected
    with atomic_path(tmp_path / "c.png") as temporary:
        temporary.write_bytes(b"png")
    assert _mode(tmp_path / "c.png") == expected
    # A plain open() under the same umask gives the same mode: atomic outputs look like any other file.
    (tmp_path / "plain").write_bytes(b"x")
    assert _mode(tmp_path / "plain") == expected


def test_directories_follow_the_umask_and_replace_whole(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "weights"
    for content in ("old", "new"):
        with atomic_dir(target) as temporary:
            (temporary / "file.txt").write_text(content)
    assert (target / "file.txt").read_text() == "new"
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "file.txt") == 0o666 & ~umask
    assert [path.name for path in tmp_path.iterdir()] == ["weights"]  # no temporaries left behind


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = atomic_write_bytes(tmp_path / "out.bin", b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.bin"]
