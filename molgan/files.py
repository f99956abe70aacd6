"""Writing files so that a reader (or a crash mid-write) never sees half of one."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

# Requested mode of every file written here; the kernel removes the umask's bits from it (0644
# under the usual umask 022), as for any new file.
NEW_FILE_MODE = 0o666


def _create_beside(path: Path) -> tuple[Path, int]:
    """Create an empty, uniquely named temporary file beside ``path``; returns it and its mode.

    Created with ``NEW_FILE_MODE``, so the mode is that of any new file: the kernel applies the
    umask. (``tempfile.mkstemp`` would make it private, 0600; reading the umask would mean
    changing it for the whole process for a moment.)
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE)
        except FileExistsError:
            continue
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        os.close(fd)
        return tmp, mode


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    Readers see the old file or the new one, never a half-written one. The file gets the usual
    permissions of a new file (0666 less the umask: 0644 under umask 022), not a private 0600:
    checkpoints and pictures are meant to be shared, e.g. mounted into a container that runs as
    another user. That holds whatever ``write`` does with ``tmp``, including replacing it with a
    file of its own (as ``safetensors.torch.save_file`` does, with mode 0600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_beside(path)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
