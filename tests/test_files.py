"""Atomic file writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from molgan.files import atomic_write


def test_atomic_write_replaces_the_file_with_shareable_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"first"))
    atomic_write(target, lambda tmp: tmp.write_bytes(b"second"))
    assert target.read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
