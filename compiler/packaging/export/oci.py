"""`compile-pkg export --format oci`: the package as an OCI image layout (a folder any OCI
tool reads: `oras cp --from-oci-layout`, `skopeo copy oci:`), and `read_layout`, the way back.

Every package file is one raw blob whose digest is its sha256 in the package manifest, named
by a `org.opencontainers.image.title` annotation (its package path). There is one OCI
manifest per target, so a host pulls only its own artifacts: it lists manifest.json (and
signatures.json), reference/, reports/ and that target's artifact files as layers, with the
CNCF ModelPack media types (artifact type `application/vnd.cncf.model.manifest.v1+json`, a
ModelPack config blob, weight/dataset/doc layers) and annotations carrying each artifact's
parity verdict, latency and hardware requirements. index.json lists the per-target manifests
with their platform.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from compiler.core.errors import IntegrityError, PackageError
from compiler.packaging.export.records import ExportResult, LeftOut
from compiler.packaging.export.source import VerifiedPackage
from compiler.packaging.write import write_atomically
from compiler.serving.integrity import check_package
from compiler.serving.manifest import (
    MANIFEST_FILE,
    ArtifactEntry,
    Manifest,
    check_member_path,
    read_manifest,
)

__all__ = ["ARTIFACT_TYPE", "LAYER_TYPES", "export_oci", "read_layout"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
LAYER_TYPES = {  # by the package folder a file lives in
    "artifacts": "application/vnd.cncf.model.weight.v1.raw",
    "reference": "application/vnd.cncf.model.dataset.v1.raw",
    "reports": "application/vnd.cncf.model.doc.v1.raw",
    "": "application/vnd.cncf.model.weight.config.v1.raw",  # manifest.json, signatures.json
}
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
_PLATFORMS = {"x86_64": "amd64", "aarch64": "arm64"}
_MAX_JSON = 64 << 20


def _descriptor(media_type: str, data_digest: str, size: int, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": f"sha256:{data_digest}", "size": size, **extra}


class _Blobs:
    """blobs/sha256/ of a layout being written: each digest once."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True)

    def add_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        path = self.dir / digest
        if not path.exists():
            path.write_bytes(data)
        return digest, len(data)

    def add_file(self, path: Path, digest: str) -> None:
        if (self.dir / digest).exists():
            path.unlink()
        else:
            shutil.move(path, self.dir / digest)


def _layer(path: str, digest: str, size: int) -> dict[str, Any]:
    folder = path.split("/", 1)[0] if "/" in path else ""
    return _descriptor(LAYER_TYPES[folder], digest, size, annotations={TITLE: path})


def _evidence(vp: VerifiedPackage, arts: list[ArtifactEntry]) -> str:
    """Per artifact: parity verdict, latest p50/p99 and speedup, requirements (one JSON)."""
    out = {}
    for a in arts:
        ev = vp.evidence(a, a.id)
        timed = [r for r in ev.measurements.latency if r.artifact is not None]
        lat = timed[-1] if timed else None
        out[a.id] = {
            "status": a.status,
            "precision": a.precision,
            "parity": ev.parity_verdict,
            "p50_ms": lat.artifact.p50_ms if lat and lat.artifact else None,
            "p99_ms": lat.artifact.p99_ms if lat and lat.artifact else None,
            "speedup": lat.speedup_vs_reference if lat else None,
            "requirements": a.requirements.model_dump(mode="json") if a.requirements else None,
        }
    return json.dumps(out, sort_keys=True)


def _model_config(m: Manifest, arts: list[ArtifactEntry], diff_ids: list[str]) -> bytes:
    """The ModelPack config blob (descriptor, config, modelfs)."""
    doc = {
        "descriptor": {
            "name": m.package.name,
            "version": m.package.version,
            "authors": m.package.authors,
            "licenses": [m.package.license] if m.package.license else [],
            "description": m.package.description,
        },
        "config": {
            "format": "+".join(sorted({a.backend for a in arts})),
            "precision": "+".join(sorted({a.precision for a in arts})),
        },
        "modelfs": {"type": "layers", "diffIds": diff_ids},
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _target_manifest(
    vp: VerifiedPackage, target: str, arts: list[ArtifactEntry], common: list[dict[str, Any]]
) -> dict[str, Any]:
    files = [f for a in arts for f in a.files]
    layers = common + [_layer(f.path, f.sha256, f.size) for f in files]
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "layers": layers,
        "annotations": {
            "dev.compile-pkg.target": target,
            "dev.compile-pkg.core_sha256": vp.manifest.core_sha256,
            "dev.compile-pkg.signatures": vp.signatures.describe(),
            "dev.compile-pkg.artifacts": _evidence(vp, arts),
        },
    }


def _fill(vp: VerifiedPackage, root: Path, result: ExportResult) -> None:
    m = vp.manifest
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}\n', encoding="utf-8")
    blobs = _Blobs(root)
    scratch = root / ".scratch"
    common: list[dict[str, Any]] = []
    for rel in vp.root_files():
        digest, size = blobs.add_bytes(vp.read_member(rel))
        common.append(_layer(rel, digest, size))
    for entry in m.reports:
        digest, size = blobs.add_bytes(vp.read_member(entry.path, entry))
        common.append(_layer(entry.path, digest, size))
    vp.copy_reference(scratch)
    for a in vp.with_files:
        vp.copy_artifact(a, scratch, keep_layout=True)
    for f in [*m.reference.files, *(f for a in vp.with_files for f in a.files)]:
        if (scratch / f.path).exists():
            blobs.add_file(scratch / f.path, f.sha256)
    shutil.rmtree(scratch)
    common += [_layer(f.path, f.sha256, f.size) for f in m.reference.files]
    by_target: dict[str, list[ArtifactEntry]] = {}
    for a in vp.with_files:
        by_target.setdefault(a.target, []).append(a)
    index = []
    for target, arts in sorted(by_target.items()):
        manifest = _target_manifest(vp, target, arts, common)
        config = _model_config(m, arts, [layer["digest"] for layer in manifest["layers"]])
        manifest["config"] = _descriptor(CONFIG_TYPE, *blobs.add_bytes(config))
        ref = f"{m.package.version}-{target}"
        arch = arts[0].requirements.arch if arts[0].requirements else ""
        index.append(
            _descriptor(
                OCI_MANIFEST,
                *blobs.add_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode()),
                artifactType=ARTIFACT_TYPE,
                platform={"os": "linux", "architecture": _PLATFORMS.get(arch, arch)},
                annotations={REF_NAME: ref, "dev.compile-pkg.target": target},
            )
        )
        result.exported += [ref] * len(arts)
        result.artifacts += [a.id for a in arts]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index}
    (root / "index.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def export_oci(vp: VerifiedPackage, layout: Path) -> ExportResult:
    """Write `vp` as an OCI image layout at `layout` (replaced atomically)."""
    carried = {a.id for a in vp.with_files}
    result = ExportResult(
        format="oci",
        output=str(layout),
        left_out=[LeftOut(id=s.id, reason=s.reason) for s in vp.skipped if s.id not in carried],
    )
    write_atomically(layout, lambda root: _fill(vp, root, result))
    return result


def _read_blob(layout: Path, descriptor: dict[str, Any]) -> Path:
    """The blob a descriptor names, its digest checked (IntegrityError otherwise)."""
    digest = str(descriptor.get("digest", ""))
    algo, _, hexdigest = digest.partition(":")
    if (
        algo != "sha256"
        or len(hexdigest) != 64
        or not all(c in "0123456789abcdef" for c in hexdigest)
    ):
        raise PackageError(f"{layout}: descriptor digest {digest!r} is not sha256:<64 hex>")
    path = layout / "blobs" / "sha256" / hexdigest
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        raise PackageError(f"{layout}: blob {digest} is missing") from None
    if h.hexdigest() != hexdigest:
        raise IntegrityError(f"{layout}: blob {digest} does not match its digest (corrupted)")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_JSON:
            raise ValueError(f"larger than {_MAX_JSON >> 20} MiB")
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path}: not a readable OCI JSON document ({exc})") from None
    if not isinstance(doc, dict):
        raise PackageError(f"{path}: not a JSON object")
    return doc


def read_layout(layout: Path, out: Path) -> Manifest:
    """Rebuild the package an OCI layout holds into `out` (written atomically), every blob
    checked against its digest and the package against its manifest."""
    index = _read_json(layout / "index.json")

    def fill(staging: Path) -> Manifest:
        for desc in index.get("manifests", []):
            manifest = _read_json(_read_blob(layout, desc))
            for layer in manifest.get("layers", []):
                title = str(layer.get("annotations", {}).get(TITLE, ""))
                try:
                    check_member_path(title)
                except ValueError as exc:
                    raise PackageError(f"{layout}: layer {layer.get('digest')}: {exc}") from None
                target = staging / title
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(_read_blob(layout, layer), target)
        if not (staging / MANIFEST_FILE).is_file():
            raise PackageError(
                f"{layout}: no layer holds {MANIFEST_FILE}; not a compile-pkg export"
            )
        m = read_manifest(staging)
        check_package(staging, m).raise_if_bad()
        return m

    return write_atomically(out, fill)
