"""The package an export reads: its manifest checked, its whole file set hashed against it, its
signatures checked against the trust policy, and each exported file copied from a private,
hash-checked copy (compiler/serving/integrity.py's `VerifiedCopy`) so what lands in the export
is exactly what was verified."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import IntegrityError
from compiler.core.records import ArtifactMeasurements
from compiler.packaging.export.records import ExportedArtifact
from compiler.serving.integrity import (
    SIGNATURES_FILE,
    VerifiedCopy,
    check_package,
    open_member,
)
from compiler.serving.loader import artifact_contract
from compiler.serving.manifest import (
    MANIFEST_FILE,
    ArtifactEntry,
    FileEntry,
    Manifest,
    parse_manifest,
    read_manifest,
)
from compiler.serving.selection import parity_verdict
from compiler.serving.signing import SignatureStatus, TrustPolicy, check_signatures, native_refusal

__all__ = ["Skipped", "VerifiedPackage", "open_verified"]


@dataclass(frozen=True)
class Skipped:
    """An artifact an export leaves out, and why (its status, or the trust policy)."""

    id: str
    reason: str


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose file set and signatures were checked; `exportable` are the artifacts
    with files that the trust policy lets run (native code needs a trusted signature)."""

    root: Path
    manifest: Manifest
    signatures: SignatureStatus
    exportable: tuple[ArtifactEntry, ...]
    skipped: tuple[Skipped, ...]

    @property
    def with_files(self) -> tuple[ArtifactEntry, ...]:
        """Every artifact that has files (built or deferred), whatever the trust policy says:
        what a format that only ships files (OCI) carries; the loader applies trust later."""
        return tuple(a for a in self.manifest.artifacts if a.files)

    def copy_artifact(self, a: ArtifactEntry, dest: Path, *, keep_layout: bool = False) -> None:
        """Copy `a`'s files into `dest`, hashed on the way (IntegrityError on a mismatch):
        relative to its folder, or under their package paths with `keep_layout`."""
        with VerifiedCopy(self.root, a) as copy:
            base = dest / a.directory if keep_layout else dest
            _move_tree(copy.artifact_dir, base)

    def copy_reference(self, dest: Path) -> None:
        """The reference/ files, hashed on the way, into `dest`/reference."""
        with VerifiedCopy(self.root, self.manifest.reference) as copy:
            _move_tree(copy.artifact_dir, dest / "reference")

    def evidence(self, a: ArtifactEntry, name: str) -> ExportedArtifact:
        """The record that travels with `a` in an export (compile_pkg.json)."""
        m = self.manifest
        verdict, how = parity_verdict(m, a.id)
        return ExportedArtifact(
            name=name,
            package=m.package,
            core_sha256=m.core_sha256,
            source_sha256=m.source.sha256,
            signatures=self.signatures.describe(),
            artifact=a,
            contract=artifact_contract(m.contract, a),
            parity_verdict=verdict,
            parity_how=how,
            reference=m.reference.description,
            measurements=m.measurements.get(a.id) or ArtifactMeasurements(),
        )

    def root_files(self) -> list[str]:
        """manifest.json, and signatures.json when the package is signed."""
        return [f for f in (MANIFEST_FILE, SIGNATURES_FILE) if (self.root / f).is_file()]

    def read_member(self, rel: str, entry: FileEntry | None = None) -> bytes:
        """A small file of the package (reports, manifest.json, signatures.json), checked
        against `entry` when it has one; manifest.json is checked to be the manifest read."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.fdopen(open_member(fd, rel), "rb") as fh:
                data = fh.read()
        finally:
            os.close(fd)
        if entry is not None and (
            hashlib.sha256(data).hexdigest() != entry.sha256 or len(data) != entry.size
        ):
            raise IntegrityError(
                f"{self.root}: {rel} changed after the package was checked; export again"
            )
        if rel == MANIFEST_FILE and parse_manifest(data).core_sha256 != self.manifest.core_sha256:
            raise IntegrityError(f"{self.root}: {rel} changed after it was read; export again")
        return data


def _move_tree(src: Path, dest: Path) -> None:
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dest / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        os.chmod(target, 0o644)


def open_verified(package: Path, trust: TrustPolicy) -> VerifiedPackage:
    """Check `package` (PackageError/IntegrityError before anything is written) and decide
    which artifacts may be exported."""
    m = read_manifest(package)
    check_package(package, m).raise_if_bad()
    status = check_signatures(package, m, trust)
    exportable: list[ArtifactEntry] = []
    skipped: list[Skipped] = []
    for a in m.artifacts:
        refusal = native_refusal(a, status, trust)
        if a.status in ("skipped", "failed"):
            skipped.append(Skipped(a.id, f"{a.status}: {a.reason}"))
        elif refusal:
            skipped.append(Skipped(a.id, refusal))
        else:
            exportable.append(a)
    return VerifiedPackage(package, m, status, tuple(exportable), tuple(skipped))
