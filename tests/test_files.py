"""Atomic file writes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from molgan.files import atomic_write


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def replace_with_private_file(tmp: Path) -> None:
    """Write the way safetensors' save_file does: a private file of its own, renamed over ``tmp``."""
    own = tmp.with_name(tmp.name + ".own")
    fd = os.open(own, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(b"replaced")
    os.replace(own, tmp)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)],
                         ids=["umask022", "umask027", "umask077"])
@pytest.mark.parametrize("writer", [lambda tmp: tmp.write_bytes(b"written"), replace_with_private_file],
                         ids=["writes_in_place", "replaces_the_file"])
def test_atomic_write_gives_the_mode_of_a_new_file(
    tmp_path: Path, set_umask: Callable[[int], int], umask: int, expected: int,
    writer: Callable[[Path], None],
) -> None:
    set_umask(umask)
    target = tmp_path / "sub" / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"first"))
    atomic_write(target, writer)
    assert target.read_bytes() in (b"written", b"replaced")
    assert mode(target) == expected
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
