"""Assemble a package from a DAG run and write it atomically; pack it reproducibly.

Layout:
    manifest.json
    artifacts/<target>.<variant>/...      one folder per built artifact
    reference/inputs.npz, outputs.npz     sample inputs and fp32 reference outputs
    reference/model.onnx                  the normalized fp32 model (optional)
    reports/parity.json, latency.json, report.md

The package is written to a temporary sibling folder and renamed into place: a crash or kill
leaves the old package (or none), never a half-written one.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from compiler import __version__
from compiler.core.errors import PackageError
from compiler.measure.verify import now_utc
from compiler.packaging.report import write_reports
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.dag import NodeResult
from compiler.pipeline.normalize import MODEL_FILE, file_sha256
from compiler.serving.manifest import (
    ArtifactEntry,
    FileEntry,
    Manifest,
    Provenance,
    ReferenceInfo,
    SourceInfo,
    manifest_json,
)
from compiler.serving.selection import select_order

__all__ = ["assemble", "write_atomically", "pack", "rewrite_manifest", "library_versions"]


def library_versions() -> dict[str, str]:
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


def _files(root: Path, folder: str) -> list[FileEntry]:
    base = root / folder
    return [
        FileEntry(path=p.relative_to(root).as_posix(), sha256=file_sha256(p), size=p.stat().st_size)
        for p in sorted(base.rglob("*"))
        if p.is_file()
    ]


def _git_commit(path: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def assemble(
    staging: Path,
    *,
    g: Any,
    results: dict[str, NodeResult],
    config: BuildConfig,
    source_name: str,
    source_kind: str,
    source_digest: str,
    source_path: Path,
    started_at: str,
) -> Manifest:
    """Fill `staging` with the package's files and return its manifest (not yet written)."""
    norm = results["normalize"]
    if norm.status not in ("ran", "cached"):
        raise PackageError(f"normalize failed: {norm.reason}")
    (staging / "reference").mkdir(parents=True)
    shutil.copyfile(results["data"].out / "samples.npz", staging / "reference" / "inputs.npz")  # type: ignore[operator]
    ref = results["reference"]
    if ref.status not in ("ran", "cached"):
        raise PackageError(f"reference run failed: {ref.reason}")
    shutil.copyfile(ref.out / "outputs.npz", staging / "reference" / "outputs.npz")  # type: ignore[operator]
    if config.include_reference_model:
        for f in sorted(norm.out.iterdir()):  # type: ignore[union-attr]
            shutil.copyfile(f, staging / "reference" / f.name)

    artifacts: list[ArtifactEntry] = []
    measurements: dict[str, dict[str, list[dict[str, Any]]]] = {}
    libs = library_versions()
    for nid in sorted(n for n in g if g.nodes[n]["kind"] == "compile"):
        node = g.nodes[nid]
        target, variant, vcfg = node["target"], node["variant"], node["config"]
        aid = f"{target}/{variant}"
        comp = results[nid]
        entry = ArtifactEntry(
            id=aid,
            target=target,
            variant=variant,
            backend=vcfg.compile.backend,
            precision=vcfg.precision,
            status="built",
            passes=[p.name for p in vcfg.passes],
            cache_key=comp.key,
        )
        if comp.status in ("ran", "cached"):
            folder = f"artifacts/{target}.{variant}"
            shutil.copytree(comp.out, staging / folder)  # type: ignore[arg-type]
            entry = ArtifactEntry.model_validate(
                entry.model_dump()
                | {
                    "status": comp.meta.get("status", "built"),
                    "directory": folder,
                    "files": _files(staging, folder),
                    "requirements": comp.meta["requirements"],
                    "runtime": comp.meta["runtime"],
                    "portable": comp.meta["portable"],
                    "backend_version": comp.meta["backend_version"],
                    "notes": comp.meta["notes"],
                    "precision": comp.meta["precision"],
                }
            )
            libs.update(comp.meta["backend_version"])
            ver = results[f"{aid}:verify"]
            if ver.status in ("ran", "cached"):
                measurements[aid] = {
                    "parity": [ver.meta["parity"]],
                    "latency": [ver.meta["latency"]] if ver.meta.get("latency") else [],
                }
            else:
                measurements[aid] = {
                    "parity": [{"status": "error", "reason": ver.reason}],
                    "latency": [],
                }
        else:
            status = "skipped" if comp.status == "skipped" else "failed"
            install = ""
            if "(to get it: " in comp.reason:
                install = comp.reason.split("(to get it: ", 1)[1].rstrip(")")
            entry = ArtifactEntry.model_validate(
                entry.model_dump() | {"status": status, "reason": comp.reason, "install": install}
            )
        artifacts.append(entry)

    cfg_json = config.model_dump(mode="json")
    contract = norm.meta["contract"]
    data_meta = results["data"].meta
    manifest = Manifest(
        package=config.package.model_copy(
            update={"name": config.package.name or Path(source_name).stem}
        ),
        source=SourceInfo(
            name=source_name,
            kind=source_kind,  # type: ignore[arg-type]
            sha256=source_digest,
            normalized_sha256=file_sha256(norm.out / MODEL_FILE),  # type: ignore[operator]
            opset=norm.meta["opset"],
            ir_version=norm.meta["ir_version"],
            producer=norm.meta.get("producer", ""),
        ),
        provenance=Provenance(
            tool=f"compile-pkg {__version__}",
            libraries=dict(sorted(libs.items())),
            config=cfg_json,
            config_sha256=config.digest(),
            source_git_commit=_git_commit(source_path),
        ),
        contract=contract,
        reference=ReferenceInfo(
            description="normalized fp32 model on onnxruntime CPUExecutionProvider",
            runtime=ref.meta["runtime"],
            samples=data_meta["samples"],
            samples_source=data_meta["samples_source"],
            calibration_source=data_meta["calibration_source"],
            files=_files(staging, "reference"),
        ),
        artifacts=artifacts,
        target_notes=dict(sorted(g.graph.get("target_notes", {}).items())),
        measurements=measurements,
        build={
            "started_at": started_at,
            "finished_at": now_utc(),
            "source_path": str(source_path),
            "nodes": [
                {
                    "node": n,
                    "status": r.status,
                    "seconds": r.seconds,
                    "reason": r.reason,
                    "key": r.key,
                }
                for n, r in results.items()
            ],
            "pass_log": {
                n: r.meta.get("record")
                for n, r in results.items()
                if g.nodes[n]["kind"] == "pass" and r.meta.get("record")
            },
            "normalize": norm.meta.get("record", {}),
        },
    )
    manifest.selection = select_order(manifest)
    return manifest


def write_atomically(out: Path, fill: Any) -> Any:
    """Create a staging folder beside `out`, let `fill(staging)` populate it, then swap it in."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = fill(staging)
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "pkg")
        os.rename(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return result
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_package(staging: Path, manifest: Manifest) -> None:
    write_reports(staging, manifest)
    (staging / "manifest.json").write_text(manifest_json(manifest), encoding="utf-8")


def rewrite_manifest(package: Path, manifest: Manifest) -> None:
    """Replace manifest.json and the reports in place, each file atomically."""
    manifest.selection = select_order(manifest)
    write_reports(package, manifest)
    tmp = package / ".manifest.json.tmp"
    tmp.write_text(manifest_json(manifest), encoding="utf-8")
    os.replace(tmp, package / "manifest.json")


def pack(package: Path, archive: Path) -> Path:
    """A reproducible .tar.gz: sorted entries, mtime 0, owner root:root, fixed modes."""
    if not (package / "manifest.json").is_file():
        raise PackageError(f"{package}: not a package (no manifest.json)")
    prefix = package.name
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")
    paths = sorted(package.rglob("*"), key=lambda p: p.relative_to(package).as_posix())
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for p in [package, *paths]:
            rel = p.relative_to(package).as_posix()
            info = tarfile.TarInfo(prefix if rel == "." else f"{prefix}/{rel}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
            if p.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = p.stat().st_size, 0o644
                with p.open("rb") as fh:
                    tar.addfile(info, fh)
    os.replace(tmp, archive)
    return archive
