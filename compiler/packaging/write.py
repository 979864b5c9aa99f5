"""Writing packages: atomically into place, manifest rewrites, a reproducible `pack` into one
archive and a safe `unpack` of one.

A package is written to a staging folder beside it and swapped into place with one
`renameat2(RENAME_EXCHANGE)` (where the filesystem has it; else two renames, undone by the next
writer if a kill falls between them): a crash or kill leaves the old package or the new one,
never a half-written one and never none. Each writer holds a lock on its staging folder, so
the next writer to the same place collects what killed writers left behind and leaves live
ones alone.
"""

from __future__ import annotations

import ctypes
import fcntl
import gzip
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from compiler.core.errors import PackageError
from compiler.core.hashing import file_sha256
from compiler.packaging.report import write_reports
from compiler.serving.archive import extract_package
from compiler.serving.integrity import SIGNATURES_FILE, check_package, open_member
from compiler.serving.manifest import (
    MANIFEST_FILE,
    FileEntry,
    Manifest,
    manifest_json,
    read_manifest,
)
from compiler.serving.selection import select_order

__all__ = [
    "collect_staging",
    "finish_package",
    "library_versions",
    "pack",
    "rewrite_manifest",
    "unpack",
    "write_atomically",
]

_T = TypeVar("_T")
_STALE_NEW = 600.0  # a `.new-` folder older than this was left by a writer killed at birth
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_FILLING: set[Path] = set()  # staging folders this process is filling (not yet in place)


def library_versions() -> dict[str, str]:
    """The versions of the libraries every build uses (a backend adds its own)."""
    import networkx
    import numpy
    import onnx
    import onnxruntime
    import pydantic

    return {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "networkx": networkx.__version__,
        "pydantic": pydantic.__version__,
    }


def _locked_dir(parent: Path, prefix: str, kind: str) -> tuple[Path, int]:
    """A new folder `.{prefix}.{kind}-XXXX` in `parent`, locked by this process (the fd)."""
    new = Path(tempfile.mkdtemp(prefix=f".{prefix}.new-", dir=parent))
    fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    final = new.with_name(new.name.replace(".new-", f".{kind}-", 1))
    os.rename(new, final)
    return final, fd


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where that is not supported."""
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL (filesystem lacks it), EOPNOTSUPP
        return False
    raise OSError(err, os.strerror(err), str(b))


def collect_staging(out: Path) -> list[Path]:
    """Remove what killed writers of `out` left beside it (their locks are free); if one was
    killed between its two renames, put the old package back first. Returns what was removed."""
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for p in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind = p.name[len(out.name) + 2 :].split("-", 1)[0]
        if kind == "new":
            if time.time() - p.lstat().st_mtime > _STALE_NEW:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            continue
        if kind not in ("tmp", "old") or p.is_symlink() or not p.is_dir():
            continue
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer
            if kind == "old" and not out.exists() and (p / "pkg" / MANIFEST_FILE).is_file():
                os.rename(p / "pkg", out)
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        finally:
            os.close(fd)
    return removed


def write_atomically(out: Path, fill: Callable[[Path], _T]) -> _T:
    """Create a staging folder beside `out`, let `fill(staging)` populate it, then swap it in."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    collect_staging(out)
    staging, fd = _locked_dir(out.parent, out.name, "tmp")
    _FILLING.add(staging)
    try:
        result = fill(staging)
        if not out.exists() and not out.is_symlink():
            os.rename(staging, out)
        elif _exchange(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now the old package
        else:
            old, old_fd = _locked_dir(out.parent, out.name, "old")
            try:
                os.rename(out, old / "pkg")
                os.rename(staging, out)
            finally:
                shutil.rmtree(old, ignore_errors=True)
                os.close(old_fd)
        return result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        _FILLING.discard(staging)
        os.close(fd)


def _hash_reports(staging: Path) -> list[FileEntry]:
    return [
        FileEntry(
            path=p.relative_to(staging).as_posix(), sha256=file_sha256(p), size=p.stat().st_size
        )
        for p in sorted((staging / "reports").rglob("*"))
        if p.is_file()
    ]


def finish_package(staging: Path, manifest: Manifest) -> None:
    """Write the reports (hashed into the manifest) and manifest.json of a package in staging."""
    write_reports(staging, manifest)
    manifest.reports = _hash_reports(staging)
    (staging / MANIFEST_FILE).write_text(manifest_json(manifest), encoding="utf-8")


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copyfile(src, dst, follow_symlinks=False)


def rewrite_manifest(package: Path, manifest: Manifest) -> None:
    """Replace manifest.json and the reports: as a new package (the other files hard linked,
    so cheap) swapped into place; in place for a package this process is still assembling."""
    manifest.selection = select_order(manifest)
    if package.resolve() in _FILLING:
        shutil.rmtree(package / "reports", ignore_errors=True)
        finish_package(package, manifest)
        return
    report_paths = {f.path for f in manifest.reports}

    def fill(staging: Path) -> None:
        for f in manifest.all_files():
            if f.path not in report_paths:
                _link_or_copy(package / f.path, staging / f.path)
        if (package / SIGNATURES_FILE).is_file():
            _link_or_copy(package / SIGNATURES_FILE, staging / SIGNATURES_FILE)
        finish_package(staging, manifest)

    write_atomically(package, fill)


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, size, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def pack(package: Path, archive: Path) -> Path:
    """A reproducible .tar.gz of a package that passes its integrity check: sorted entries,
    mtime 0, owner root:root, fixed modes; identical files are one member and hard links to it.
    Symlinks, special files and unlisted files are refused (the check reports them)."""
    m = read_manifest(package)
    check_package(package, m).raise_if_bad()
    prefix = package.resolve().name
    files = {f.path: f.sha256 for f in m.all_files()}
    for extra in (MANIFEST_FILE, SIGNATURES_FILE):
        if (package / extra).is_file():
            files[extra] = ""
    dirs = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)})
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    first: dict[str, str] = {}  # sha256 -> the member holding those bytes
    root_fd = os.open(package, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with (
            open(tmp, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_tarinfo(prefix, tarfile.DIRTYPE, 0o755))
            for d in dirs:
                tar.addfile(_tarinfo(f"{prefix}/{d}", tarfile.DIRTYPE, 0o755))
            for rel in sorted(files):
                name, digest = f"{prefix}/{rel}", files[rel]
                if digest and digest in first:
                    tar.addfile(_tarinfo(name, tarfile.LNKTYPE, 0o644, link=first[digest]))
                    continue
                fd = open_member(root_fd, rel)
                with os.fdopen(fd, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, size), fh)
                if digest:
                    first[digest] = name
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(root_fd)
    os.replace(tmp, archive)
    return archive


def unpack(archive: Path, out: Path) -> Manifest:
    """Extract a packed package safely into the folder `out` (written atomically): every
    member checked before extraction, then the manifest and every file checked."""

    def fill(staging: Path) -> Manifest:
        inner = extract_package(archive, staging)
        moved = inner.rename(staging / f".unpacked-{os.getpid()}")
        for child in sorted(moved.iterdir()):
            child.rename(staging / child.name)
        moved.rmdir()
        m = read_manifest(staging)
        check_package(staging, m).raise_if_bad()
        return m

    if not archive.is_file():
        raise PackageError(f"{archive}: no such archive")
    return write_atomically(out, fill)
