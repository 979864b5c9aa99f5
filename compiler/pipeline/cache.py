"""Content-addressed cache of DAG node outputs, safe to share between concurrent builds.

An entry is a folder `<root>/<key[:2]>/<key>/` holding `out/` (the node's files), `node.json`
(its record) and `entry.json` (the sha256 of both). Entries are built in the build's own
scratch folder and renamed into place, so a crash or kill never leaves a half-written entry.

- **Verified reads**: `get` re-hashes the entry; one that fails (edited, truncated, a file
  replaced) is evicted, the log says so, and the node is built again.
- **Per-entry locks**: `get` of a key nobody has built takes that key's lock and holds it until
  `commit` or `discard`; a second build asking for the same key waits, then reads the entry
  the first one committed: both builds succeed with identical results, and the work is done
  once.
  A build running several nodes at once asks without blocking (`block=False`) while it
  holds other keys, so two such builds never wait for each other's keys.
- **Per-build scratch**: each `Cache` has its own scratch folder and removes only that one;
  scratch left by killed builds (their lock is free) is collected by the next build.
- **Pruning**: running builds hold the cache's shared lock; `prune(max_bytes)` takes it
  exclusively and removes least recently used entries until the cache fits.
"""

from __future__ import annotations

import enum
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.core.errors import CompilePkgError
from compiler.core.files import default_cache_root, remove_if_unlocked
from compiler.core.hashing import dir_digest

__all__ = ["BUSY", "Busy", "Cache", "PruneReport", "default_cache_dir"]

log = logging.getLogger("compile_pkg.cache")
_ENTRY_VERSION = 1
_OTHER_LAYOUT = "was written by another cache layout"  # an older compile-pkg: not a warning
_STALE_NEW = 600.0  # a scratch folder still named new-* after this long lost its build


def default_cache_dir() -> Path:
    return default_cache_root()


class Busy(enum.Enum):
    """`Cache.get(key, block=False)`: another build holds the key's lock."""

    BUSY = "busy"


BUSY = Busy.BUSY


@dataclass(frozen=True)
class PruneReport:
    removed: int
    removed_bytes: int
    kept: int
    kept_bytes: int
    busy: int  # entries in use by a running build, left alone
    scratch_collected: int


def _flock(path: Path, mode: int) -> int | None:
    """An fd holding `mode` on the lock file `path` (created if needed); None if LOCK_NB and
    taken. Retries when the file was replaced while waiting (a pruned lock file)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


class Cache:
    def __init__(self, root: Path, enabled: bool = True) -> None:
        # absolute: backends run workers in other folders (TVM builds in a child process)
        self.root = Path(root).absolute()
        self.enabled = enabled
        self._shared: int | None = None  # the cache-wide lock this build holds (shared)
        self._scratch: Path | None = None
        self._scratch_fd: int | None = None
        self._held: dict[str, int] = {}  # key -> fd of its lock, held until commit/discard
        self._scratch_keys: dict[Path, str] = {}

    # ------------------------------------------------------------------ paths and locks

    def _entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def _lock_path(self, key: str) -> Path:
        d = self.root / "locks" / key[:2]
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{key}.lock"

    def _open(self) -> Path:
        """This build's scratch folder, the cache-wide shared lock, stale scratch collected."""
        if self._scratch is not None:
            return self._scratch
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        self._shared = _flock(self.root / "cache.lock", fcntl.LOCK_SH)
        new = Path(tempfile.mkdtemp(prefix="new-", dir=tmp))
        fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._scratch = new.with_name("build-" + new.name[4:])
        os.rename(new, self._scratch)
        self._scratch_fd = fd
        _collect_scratch(tmp)
        return self._scratch

    def _take(self, key: str, block: bool = True) -> bool:
        """Hold `key`'s lock; without `block`, False when another build holds it."""
        if key not in self._held:
            fd = _flock(self._lock_path(key), fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            if fd is None:
                return False
            self._held[key] = fd
        return True

    def _release(self, key: str) -> None:
        fd = self._held.pop(key, None)
        if fd is not None:
            os.close(fd)

    # ------------------------------------------------------------------ entries

    def _problem(self, entry: Path) -> str:
        """Why the entry at `entry` may not be used ('' when it is sound)."""
        try:
            seal = json.loads((entry / "entry.json").read_text(encoding="utf-8"))
            record = (entry / "node.json").read_bytes()
        except FileNotFoundError:
            return _OTHER_LAYOUT  # entries of older versions have no entry.json
        except (OSError, ValueError) as exc:
            return f"is unreadable ({type(exc).__name__})"
        if not isinstance(seal, dict) or seal.get("version") != _ENTRY_VERSION:
            return _OTHER_LAYOUT
        for p in (entry / "out").rglob("*"):
            if not stat.S_ISREG(p.lstat().st_mode) and not p.is_dir():
                return f"holds {p.relative_to(entry)}, not a regular file"
        if hashlib.sha256(record).hexdigest() != seal.get("record"):
            return "has a node.json that differs from its recorded sha256"
        if dir_digest(entry / "out") != seal.get("files"):
            return "has files that differ from their recorded sha256 (edited or corrupted)"
        return ""

    def _remove(self, entry: Path) -> None:
        trash = self.root / "tmp" / f"evicted-{entry.name}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(entry, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def get(self, key: str, block: bool = True) -> tuple[Path, dict[str, Any]] | None | Busy:
        """The verified entry under `key` (its `out/` and record), or None: then this build
        holds the key's lock until it commits or discards (others wait for its result).
        Without `block`, `BUSY` when another build holds the key: a build running several
        nodes at once must not wait for a key while it holds others (two builds could each
        wait for the other's)."""
        if not self.enabled:
            return None
        self._open()
        if not self._take(key, block):
            return BUSY
        entry = self._entry(key)
        if entry.exists():
            problem = self._problem(entry)
            if not problem:
                meta = json.loads((entry / "node.json").read_text(encoding="utf-8"))
                os.utime(entry)  # last use, for pruning
                self._release(key)
                return entry / "out", meta
            level = logging.INFO if problem == _OTHER_LAYOUT else logging.WARNING
            log.log(level, "cache entry %s %s: evicted, building it again", key[:16], problem)
            self._remove(entry)
        return None

    def scratch(self) -> Path:
        """This build's scratch folder (removed by `close`): for files the build's nodes share
        wherever they run, such as what a kind derives to key a node and needs to run it."""
        return self._open()

    def new_entry(self, key: str | None = None) -> Path:
        """A scratch folder with an empty `out/` in this build's scratch space (same
        filesystem as the cache); with `key`, the key's lock is held until commit/discard."""
        d = Path(tempfile.mkdtemp(prefix="node-", dir=self._open()))
        (d / "out").mkdir()
        if key is not None and self.enabled:
            self._take(key)
            self._scratch_keys[d] = key
        return d

    def commit(self, key: str, scratch: Path, record: dict[str, Any]) -> Path:
        """Seal and move the scratch folder into place atomically; return `out/`."""
        text = json.dumps(record, sort_keys=True, indent=1, allow_nan=True)
        (scratch / "node.json").write_text(text, encoding="utf-8")
        seal = {
            "version": _ENTRY_VERSION,
            "record": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "files": dir_digest(scratch / "out"),
        }
        (scratch / "entry.json").write_text(json.dumps(seal, sort_keys=True), encoding="utf-8")
        self._scratch_keys.pop(scratch, None)
        if not self.enabled:
            return scratch / "out"
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        self._take(key)
        try:
            if entry.exists() and self._problem(entry):
                self._remove(entry)
            try:
                os.rename(scratch, entry)
            except OSError:  # committed by a build that ran without the lock: as good
                shutil.rmtree(scratch, ignore_errors=True)
        finally:
            self._release(key)
        return entry / "out"

    def evict(self, key: str) -> None:
        """Remove the entry under `key` (one that cannot be read any more); this build holds
        the key's lock until it commits or discards the rebuilt one."""
        self._open()
        self._take(key)
        self._remove(self._entry(key))

    def discard(self, scratch: Path) -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        key = self._scratch_keys.pop(scratch, None)
        if key is not None:
            self._release(key)

    def close(self) -> None:
        """Release every lock this build holds and remove its scratch folder."""
        for key in list(self._held):
            self._release(key)
        self._scratch_keys.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        for fd in (self._scratch_fd, self._shared):
            if fd is not None:
                os.close(fd)
        self._scratch_fd = self._shared = None

    def clear_scratch(self) -> None:
        """Remove this build's scratch folder and release its locks (what `close` does)."""
        self.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ pruning

    def entries(self) -> list[tuple[Path, float, int]]:
        """(entry, last use, bytes) of every entry, least recently used first."""
        found = []
        for shard in sorted(self.root.glob("[0-9a-f][0-9a-f]")):
            for entry in shard.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    found.append((entry, entry.stat().st_mtime, _tree_bytes(entry)))
        return sorted(found, key=lambda e: (e[1], e[0].name))

    def prune(self, max_bytes: int) -> PruneReport:
        """Remove least recently used entries until the cache holds at most `max_bytes`;
        CompilePkgError while a build uses the cache."""
        if not self.root.is_dir():
            return PruneReport(0, 0, 0, 0, 0, 0)
        fd = _flock(self.root / "cache.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
        if fd is None:
            raise CompilePkgError(
                f"{self.root}: the cache is in use by a running build; prune it when the "
                "build has finished"
            )
        try:
            collected = _collect_scratch(self.root / "tmp") if (self.root / "tmp").is_dir() else 0
            entries = self.entries()
            total = sum(size for _, _, size in entries)
            removed = removed_bytes = busy = 0
            for entry, _, size in entries:
                if total <= max_bytes:
                    break
                lock = self._lock_path(entry.name)
                kfd = _flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if kfd is None:
                    busy += 1
                    continue
                try:
                    self._remove(entry)
                    lock.unlink(missing_ok=True)
                finally:
                    os.close(kfd)
                removed, removed_bytes, total = removed + 1, removed_bytes + size, total - size
            kept = len(entries) - removed
            return PruneReport(removed, removed_bytes, kept, total, busy, collected)
        finally:
            os.close(fd)


def _collect_scratch(tmp: Path) -> int:
    """Remove scratch folders whose build is gone (lock free); count them."""
    n = 0
    for d in tmp.iterdir():
        if d.is_symlink() or not d.is_dir():
            continue
        if d.name.startswith("new-"):
            try:
                age = time.time() - d.lstat().st_mtime
            except OSError:  # another build committed or removed it meanwhile
                continue
            if age > _STALE_NEW:
                shutil.rmtree(d, ignore_errors=True)
                n += 1
            continue
        n += remove_if_unlocked(d)  # not while its build is running
    return n
