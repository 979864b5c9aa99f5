"""The package's closed file set: every file is listed in the manifest with its sha256 and size,
and nothing else is there.

`check_package` walks the package without following links: a symlink, a special file (fifo,
device, socket), an unlisted file, a missing file or one whose size or sha256 differs from its
entry is a `FileProblem`; only `manifest.json` and `signatures.json` are not listed (the
manifest cannot hash itself; signatures cover the manifest's core). `VerifiedCopy` is how a
runtime gets its files: each listed file of the artifact is copied into a private folder of
this process while it is hashed, so what the runtime opens is exactly what was checked; a file
swapped or rewritten after the check cannot slip in, and a runtime setting cannot reach a file
the artifact does not list.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import IntegrityError, PackageError
from compiler.serving.manifest import (
    MANIFEST_FILE,
    ArtifactEntry,
    FileEntry,
    Manifest,
    ReferenceInfo,
)

__all__ = [
    "SIGNATURES_FILE",
    "FileProblem",
    "PackageCheck",
    "VerifiedCopy",
    "check_files",
    "check_package",
    "open_member",
]

SIGNATURES_FILE = "signatures.json"
ROOT_FILES = (MANIFEST_FILE, SIGNATURES_FILE)
_CHUNK = 1 << 20
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_OPEN_DIR = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class FileProblem:
    """One file that fails the check: its package path, what is wrong, and its artifact."""

    path: str
    problem: str
    artifact: str = ""  # "" for reference/, reports/ and anything outside an artifact

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class PackageCheck:
    """The result of checking a package's whole file set."""

    package: Path
    problems: tuple[FileProblem, ...]
    files: int
    bytes: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def for_artifact(self, artifact_id: str) -> list[FileProblem]:
        return [p for p in self.problems if p.artifact == artifact_id]

    @property
    def outside_artifacts(self) -> list[FileProblem]:
        return [p for p in self.problems if not p.artifact]

    def error(self, problems: list[FileProblem] | None = None) -> IntegrityError:
        shown = problems if problems is not None else list(self.problems)
        more = f" (and {len(shown) - 5} more)" if len(shown) > 5 else ""
        return IntegrityError(
            f"{self.package}: {len(shown)} file(s) fail the integrity check: "
            + "; ".join(str(p) for p in shown[:5])
            + more
            + "; rebuild or re-download the package"
        )

    def raise_if_bad(self) -> None:
        if self.problems:
            raise self.error()


def open_member(root_fd: int, rel: str) -> int:
    """A read-only descriptor of the regular file `rel` under the folder `root_fd`, opened one
    component at a time without following any link; OSError/IntegrityError otherwise."""
    parts = rel.split("/")
    fd = os.dup(root_fd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _OPEN_DIR, dir_fd=fd)
            os.close(fd)
            fd = nxt
        out = os.open(parts[-1], _OPEN_FILE, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(out).st_mode):
        os.close(out)
        raise IntegrityError(f"{rel}: not a regular file")
    return out


def _hash_fd(fd: int, sink: int | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, _CHUNK):
        h.update(chunk)
        size += len(chunk)
        if sink is not None:
            os.write(sink, chunk)
    return h.hexdigest(), size


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, os.stat_result | None, str]]:
    """(relative path, stat of a regular file or None, problem) for everything under `root`."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        path = f"{rel}/{e.name}" if rel else e.name
        st = e.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            yield path, None, "a symlink (a package holds regular files only)"
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(root, path)
        elif stat.S_ISREG(st.st_mode):
            yield path, st, ""
        else:
            yield path, None, "a special file (fifo, device or socket); not allowed in a package"


def _owners(m: Manifest) -> dict[str, tuple[FileEntry, str]]:
    owned = {f.path: (f, a.id) for a in m.artifacts for f in a.files}
    owned |= {f.path: (f, "") for f in [*m.reference.files, *m.reports]}
    return owned


def _artifact_of(m: Manifest, path: str) -> str:
    return next(
        (a.id for a in m.artifacts if a.directory and path.startswith(a.directory + "/")), ""
    )


def check_package(package: Path, m: Manifest, *, hash_files: bool = True) -> PackageCheck:
    """Check every file of `package` against `m` (sha256 too unless `hash_files` is False)."""
    listed = _owners(m)
    problems: list[FileProblem] = []
    seen: set[str] = set()
    digests: dict[tuple[int, int, int, int], str] = {}  # one hash per stored file (hard links)
    total = 0
    try:
        root_fd = os.open(package, _OPEN_DIR & ~os.O_NOFOLLOW)
    except OSError as exc:
        raise PackageError(f"{package}: cannot open the package folder ({exc})") from exc
    try:
        for path, st, problem in _walk(package):
            owner = listed.get(path)
            aid = owner[1] if owner else _artifact_of(m, path)
            if problem:
                problems.append(FileProblem(path, problem, aid))
            elif owner is None and path not in ROOT_FILES:
                if not m.reports_hashed and path.startswith("reports/"):
                    continue  # written before schema 2 hashed reports
                problems.append(
                    FileProblem(
                        path, "not listed in the manifest (unlisted files are refused)", aid
                    )
                )
            elif owner is not None and st is not None:
                seen.add(path)
                total += st.st_size
                problem = _check_entry(root_fd, owner[0], st, hash_files, digests)
                if problem:
                    problems.append(FileProblem(path, problem, aid))
    finally:
        os.close(root_fd)
    flagged = {p.path for p in problems}
    for path, (_, aid) in listed.items():
        if path not in seen and path not in flagged:
            problems.append(FileProblem(path, "missing", aid))
    return PackageCheck(package, tuple(problems), len(seen), total)


def _check_entry(
    root_fd: int,
    entry: FileEntry,
    st: os.stat_result,
    hash_files: bool,
    digests: dict[tuple[int, int, int, int], str],
) -> str:
    if st.st_size != entry.size:
        return f"size {st.st_size} bytes, the manifest says {entry.size}"
    if not hash_files:
        return ""
    ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    digest = digests.get(ident)
    if digest is None:
        try:
            fd = open_member(root_fd, entry.path)
        except (OSError, IntegrityError) as exc:
            return f"cannot be read ({exc})"
        try:
            digest, _ = _hash_fd(fd)
        finally:
            os.close(fd)
        digests[ident] = digest
    return (
        "" if digest == entry.sha256 else "sha256 differs from the manifest (tampered or corrupted)"
    )


def check_files(package: Path, artifact: ArtifactEntry) -> None:
    """Raise IntegrityError when a file of `artifact` is missing or differs from the manifest."""
    if not artifact.files:
        raise IntegrityError(f"{artifact.id}: the manifest lists no files")
    root_fd = os.open(package, _OPEN_DIR & ~os.O_NOFOLLOW)
    try:
        for f in artifact.files:
            try:
                fd = open_member(root_fd, f.path)
            except FileNotFoundError:
                raise IntegrityError(
                    f"{artifact.id}: file {f.path} is missing from {package}"
                ) from None
            except OSError as exc:
                raise IntegrityError(f"{artifact.id}: file {f.path}: {exc}") from None
            try:
                digest, size = _hash_fd(fd)
            finally:
                os.close(fd)
            if size != f.size or digest != f.sha256:
                raise IntegrityError(
                    f"{artifact.id}: file {f.path} does not match its sha256 in the manifest "
                    "(tampered or corrupted); rebuild or re-download the package"
                )
    finally:
        os.close(root_fd)


class VerifiedCopy:
    """A private copy of one artifact's listed files (or the reference's; `files`: only
    these of them), hashed while copied (IntegrityError on a mismatch). Runtimes load from
    `artifact_dir`; `close()` removes it."""

    def __init__(
        self,
        package: Path,
        source: ArtifactEntry | ReferenceInfo,
        workdir: Path | None = None,
        files: list[FileEntry] | None = None,
    ) -> None:
        folder = source.directory if isinstance(source, ArtifactEntry) else "reference"
        self.label = source.id if isinstance(source, ArtifactEntry) else "reference"
        self.root = Path(tempfile.mkdtemp(prefix="compile-pkg-verified-", dir=workdir))
        self.artifact_dir = self.root / Path(folder).name
        self.artifact_dir.mkdir(mode=0o700)
        try:
            self._copy(package, folder, source.files if files is None else files)
        except BaseException:
            self.close()
            raise

    def _copy(self, package: Path, folder: str, files: list[FileEntry]) -> None:
        root_fd = os.open(package, _OPEN_DIR & ~os.O_NOFOLLOW)
        try:
            for f in files:
                rel = f.path[len(folder) + 1 :]
                target = self.artifact_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                try:
                    src = open_member(root_fd, f.path)
                except OSError as exc:
                    raise IntegrityError(f"{self.label}: file {f.path}: {exc}") from None
                try:
                    dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    try:
                        digest, size = _hash_fd(src, dst)
                    finally:
                        os.close(dst)
                finally:
                    os.close(src)
                if size != f.size or digest != f.sha256:
                    raise IntegrityError(
                        f"{self.label}: file {f.path} does not match its sha256 in the "
                        "manifest (tampered or corrupted); rebuild or re-download the package"
                    )
                os.chmod(target, 0o400)
        finally:
            os.close(root_fd)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> VerifiedCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
