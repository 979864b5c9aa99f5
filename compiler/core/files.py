"""Two file primitives several parts share: an exclusive fcntl lock held for a block, and a
write that readers see whole or not at all (a temporary file in the same folder, renamed
over the target). Standard library only."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["locked", "write_atomically"]


@contextlib.contextmanager
def locked(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (made if missing) for the block; the kernel
    drops it when the process dies, so a killed holder never blocks the next."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` afterwards, and never part of it, even if this process is killed
    midway (then a temporary file may remain beside it, never the target half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
