"""Safe extraction of a packed package (`compile-pkg pack` makes them).

Before anything is written every member is checked: one top-level folder, relative names
without `..`, only folders, regular files and hard links to an earlier file of the same
archive (no symlinks, devices or fifos), bounded count and size. Extraction then goes through
tarfile's `data` filter as a second line (no absolute names, no links out of the destination,
no special files, permissions sanitized). The caller checks the extracted package's manifest
and file set like any other package.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

from compiler.core.errors import PackageError
from compiler.serving.manifest import check_member_path

__all__ = ["MAX_ARCHIVE_BYTES", "extract_package", "is_archive"]

MAX_ARCHIVE_BYTES = 64 << 30
MAX_MEMBERS = 100_000
_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_SUFFIXES)


def _checked_members(tar: tarfile.TarFile, archive: Path) -> tuple[str, list[tarfile.TarInfo]]:
    members = tar.getmembers()
    if not members or len(members) > MAX_MEMBERS:
        raise PackageError(f"{archive}: {len(members)} members; not a packed package")
    top = ""
    files: set[str] = set()
    names: set[str] = set()
    total = 0
    for m in members:
        name = m.name.rstrip("/")
        try:
            check_member_path(name)
        except ValueError as exc:
            raise PackageError(f"{archive}: member {m.name!r}: {exc}") from None
        first = name.split("/")[0]
        top = top or first
        if first != top or name in names:
            raise PackageError(
                f"{archive}: member {m.name!r} is outside the package folder {top!r} or repeated"
            )
        names.add(name)
        if m.islnk():
            if m.linkname not in files:
                raise PackageError(
                    f"{archive}: {m.name!r} is a hard link to {m.linkname!r}, which is not an "
                    "earlier file of the archive"
                )
        elif m.isreg():
            files.add(name)
            total += m.size
        elif not m.isdir():
            raise PackageError(
                f"{archive}: {m.name!r} is a symlink or special file; packages hold folders "
                "and regular files only"
            )
        if total > MAX_ARCHIVE_BYTES:
            raise PackageError(f"{archive}: more than {MAX_ARCHIVE_BYTES >> 30} GiB unpacked")
    return top, members


def extract_package(archive: Path, dest: Path) -> Path:
    """Extract `archive` into the (new, empty) folder `dest`; return the package folder."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            top, members = _checked_members(tar, archive)
            tar.extractall(dest, members=members, filter="data")
    except PackageError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise PackageError(f"{archive}: not a readable package archive ({exc})") from exc
    root = dest / top
    if not root.is_dir():
        raise PackageError(f"{archive}: holds no package folder")
    return root
