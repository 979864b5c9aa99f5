"""File primitives several parts share: an exclusive fcntl lock held for a block, a write that
readers see whole or not at all (a temporary file in the same folder, renamed over the
target), and a process's own temporary folder that a killed process does not leave behind for
long. Standard library only."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "default_cache_root",
    "locked",
    "process_scratch",
    "remove_if_unlocked",
    "write_atomically",
]

_SCRATCH = "compile-pkg.run-"  # not "compile-pkg-": build_package's own folders are unlocked
_BORN = "compile-pkg.born-"  # earlier versions made their folder under this name first
_STALE_BORN = 600.0
# multiprocessing's fork server listens on TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and a Unix
# socket's path holds at most 107 bytes
_SOCKET_TAIL = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
_SOCKET_PATH_MAX = 107
_SHORT_TEMP = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))


def default_cache_root() -> Path:
    """Where compile-pkg keeps what it may reuse across builds when no folder is given: the
    node cache, and the backends' own (TVM tuning databases, TensorRT timing caches):
    $COMPILE_PKG_CACHE, else $XDG_CACHE_HOME/compile-pkg, else ~/.cache/compile-pkg."""
    env = os.environ.get("COMPILE_PKG_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compile-pkg"


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


def _new_scratch(base: Path) -> tuple[Path, int]:
    """Collect in `base` the scratch folders of processes that died without cleaning up
    (their locks are free; a live process holds its lock until it exits), then make this
    process's own, locked: the folder and the descriptor that holds its lock.

    Both happen under a lock on `base` itself, so no other process collects a new folder in
    the moment between its making and its locking, and a process killed at any point leaves
    nothing the next cannot collect (the kernel drops a dead holder's locks)."""
    base_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(base_fd, fcntl.LOCK_EX)
        for p in base.glob(_SCRATCH + "*"):
            remove_if_unlocked(p)
        for p in base.glob(_BORN + "*"):  # an earlier version's, killed before its lock
            with contextlib.suppress(OSError):
                if p.is_dir() and time.time() - p.lstat().st_mtime > _STALE_BORN:
                    shutil.rmtree(p, ignore_errors=True)
        root = Path(tempfile.mkdtemp(prefix=_SCRATCH, dir=base))
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return root, fd
    finally:
        os.close(base_fd)  # and with it the lock on `base`


def remove_if_unlocked(folder: Path) -> bool:
    """Remove `folder` unless a live process holds an fcntl lock on it (the kernel drops a
    dead holder's); True when removed. Symlinks and non-folders are left alone."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its holder lives
    else:
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def _remove_scratch(root: Path, fd: int) -> None:
    shutil.rmtree(root, ignore_errors=True)
    os.close(fd)


def _socket_fits(folder: Path) -> bool:
    return len(os.fsencode(folder)) + _SOCKET_TAIL <= _SOCKET_PATH_MAX


def _socket_folder(base: Path) -> Path:
    """Where multiprocessing's fork server may put its socket folder: `base`, or where `base`
    (TMPDIR) is itself too deep for a Unix socket's 107 bytes, the first of the system's
    temporary folders that is short enough and writable (Python 3.11's multiprocessing would
    fail with "AF_UNIX path too long" there: a CI job's or pytest-xdist's deep TMPDIR)."""
    for folder in (base, *_SHORT_TEMP):
        if _socket_fits(folder) and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return base


def _fork_server_folder_in(folder: Path) -> None:
    """Make multiprocessing's own temporary folder (`get_temp_dir`, made once per process and
    removed by it at exit) in `folder`."""
    import multiprocessing.util

    saved = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        multiprocessing.util.get_temp_dir()
    finally:
        tempfile.tempdir = saved


@contextlib.contextmanager
def process_scratch() -> Iterator[Path | None]:
    """Point this process's temporary folder (`tempfile`, and `TMPDIR` for the processes it
    starts) at a new folder of its own for the block, and remove it afterwards.

    Libraries write to the temporary folder themselves (ONNX Runtime's quantizer, NNCF, TVM,
    multiprocessing's fork server), and a process killed by SIGKILL runs no cleanup: its folder
    stays. So the folder is locked while the process lives, and the next process to enter
    collects every such folder whose lock is free. For a command-line process only: it changes
    process-wide state. Yields None, changing nothing, where the temporary folder cannot be
    written."""
    import multiprocessing.util

    base = Path(tempfile.gettempdir())
    try:
        root, fd = _new_scratch(base)
    except OSError:
        yield None
        return
    if not _socket_fits(root):
        _fork_server_folder_in(_socket_folder(base))  # made (and kept) where the path fits
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(root)
    os.environ["TMPDIR"] = str(root)
    forkserver_dir = Path(multiprocessing.util.get_temp_dir())  # in `root`, unless made before
    try:
        yield root
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        if root in forkserver_dir.parents:
            # multiprocessing removes its folder at exit (priority -100); the scratch goes after
            multiprocessing.util.Finalize(None, _remove_scratch, (root, fd), exitpriority=-200)
        else:
            _remove_scratch(root, fd)
