"""A cache shared through an object store or any fsspec filesystem (`s3://bucket/prefix`,
`gs://...`, `file:///mnt/shared/cache`): a local cache that mirrors a remote one.

Builds never work in the remote store: a node's entry is read from, built in and committed to
the local mirror (its locks, scratch space and integrity checks are `Cache`'s), and the remote
is consulted only around it:

- **get**: a local miss looks for the entry remotely; it is downloaded into this build's
  scratch folder, checked exactly as a local entry is (the seal's sha256 of the record and of
  every file), and only then renamed into the mirror. An entry that fails the check is
  refused (the log says why) and the node is built again; its commit replaces the remote
  copy.
- **commit**: once the local entry is in place, it is uploaded: the remote folder is cleared,
  the files and the record go up, and the seal (`entry.json`) goes last, so a reader never
  takes a half-uploaded entry for a whole one (a reader that sees no seal sees no entry).

Object stores have no locks: two builds that make the same entry at once both upload it, and
the last seal wins; each upload holds its own build's files, and a reader verifies whatever
it finds, so the worst case is one more build of that node. A remote failure (network, access)
is logged and the build goes on with its local cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from compiler.core.errors import ConfigError
from compiler.pipeline.cache import Busy, Cache, default_cache_dir

__all__ = ["RemoteCache", "is_url", "open_cache"]

log = logging.getLogger("compile_pkg.cache")
_SEAL = "entry.json"
_INSTALL = "pip install 'compile-pkg[cluster]' (fsspec, and s3fs for s3://)"


def is_url(location: str | Path) -> bool:
    """Whether a cache location names an fsspec URL rather than a local folder."""
    return "://" in str(location)


def open_cache(location: str | Path, mirror: Path | None = None) -> Cache:
    """The cache at `location`: a local folder, or an fsspec URL mirrored into `mirror`
    (default: a folder per URL under the default local cache)."""
    if not is_url(location):
        return Cache(Path(location))
    url = str(location).rstrip("/")
    if mirror is None:
        name = hashlib.sha256(url.encode()).hexdigest()[:16]
        mirror = default_cache_dir() / "remote" / name
    return RemoteCache(url, mirror)


class RemoteCache(Cache):
    """`Cache` at the local folder `mirror`, backed by the fsspec location `url`."""

    def __init__(self, url: str, mirror: Path, enabled: bool = True) -> None:
        super().__init__(mirror, enabled)
        try:
            import fsspec  # optional: the `cluster` extra
        except ImportError as exc:
            raise ConfigError(f"cache {url}: a remote cache needs fsspec; {_INSTALL}") from exc
        try:
            self.fs, self.remote = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cache {url}: {exc}; {_INSTALL}") from exc
        self.url = url
        self._refused: set[str] = set()  # keys whose remote copy failed its check

    def _remote_entry(self, key: str) -> str:
        return f"{self.remote}/{key[:2]}/{key}"

    def get(self, key: str, block: bool = True) -> tuple[Path, dict[str, Any]] | None | Busy:
        found = super().get(key, block)
        if found is not None or not self.enabled:
            return found  # a local hit, or BUSY
        # a local miss: this build holds the key's lock until it commits or discards
        try:
            fetched = self._download(key)
        except OSError as exc:
            log.warning("remote cache %s: cannot read entry %s: %s", self.url, key[:16], exc)
            return None
        if fetched is None:
            return None
        problem = self._problem(fetched)
        if problem:
            log.warning(
                "remote cache %s: entry %s %s: refused, building it again",
                self.url,
                key[:16],
                problem,
            )
            shutil.rmtree(fetched, ignore_errors=True)
            self._refused.add(key)
            return None
        entry = self._entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(fetched, entry)  # the key's lock is held: nobody else commits it now
        except OSError:  # committed by a build that ran without the lock: as good
            shutil.rmtree(fetched, ignore_errors=True)
        return super().get(key, block)  # read as any local entry

    def _download(self, key: str) -> Path | None:
        """The remote entry under `key` in a new folder of this build's scratch space, or
        None when the remote holds no sealed entry."""
        remote = self._remote_entry(key)
        if not self.fs.exists(f"{remote}/{_SEAL}"):
            return None
        into = Path(tempfile.mkdtemp(prefix="remote-", dir=self._open()))
        for rpath in sorted(self.fs.find(remote)):
            rel = rpath[len(remote) :].lstrip("/")
            if not rel or rel.startswith("../"):
                continue
            local = into / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(rpath, str(local))
        (into / "out").mkdir(exist_ok=True)  # an entry with no files has an empty out/
        return into

    def commit(self, key: str, scratch: Path, record: dict[str, Any]) -> Path:
        out = super().commit(key, scratch, record)
        if self.enabled:
            try:
                self._upload(key, out.parent)
            except OSError as exc:
                log.warning("remote cache %s: cannot upload entry %s: %s", self.url, key[:16], exc)
        return out

    def _upload(self, key: str, entry: Path) -> None:
        """Put the local `entry` under `key` remotely, its seal last; nothing when the
        remote already holds this very seal (another build uploaded it meanwhile), unless
        this build refused the remote copy (a corrupt entry keeps its seal)."""
        remote = self._remote_entry(key)
        seal = (entry / _SEAL).read_bytes()
        if key in self._refused:
            self._refused.discard(key)
        elif self._remote_seal(remote) == seal:
            return
        if self.fs.exists(remote):
            self.fs.rm(remote, recursive=True)  # a stale or corrupt copy: no file of it stays
        files = sorted(p for p in entry.rglob("*") if p.is_file() and p != entry / _SEAL)
        for path in [*files, entry / _SEAL]:
            target = f"{remote}/{path.relative_to(entry).as_posix()}"
            self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(path), target)

    def _remote_seal(self, remote: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(f"{remote}/{_SEAL}")
        except FileNotFoundError:
            return None
        return data
