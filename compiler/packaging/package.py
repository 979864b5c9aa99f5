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
from compiler.core.hashing import file_sha256
from compiler.core.records import (
    ArtifactMeasurements,
    CompileOutput,
    DataOutput,
    NodeResult,
    NormalizeOutput,
    ParityRecord,
    PassOutput,
    ReferenceOutput,
    VerifyOutput,
)
from compiler.measure.verify import now_utc
from compiler.packaging.report import write_reports
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.normalize import MODEL_FILE
from compiler.serving.manifest import (
    ArtifactEntry,
    ArtifactStatus,
    BuildLog,
    FileEntry,
    Manifest,
    NodeLog,
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
    norm_res, ref_res = results["normalize"], results["reference"]
    if not norm_res.ok:
        raise PackageError(f"normalize failed: {norm_res.reason}")
    if not ref_res.ok:
        raise PackageError(f"reference run failed: {ref_res.reason}")
    norm = norm_res.expect(NormalizeOutput)
    data = results["data"].expect(DataOutput)
    assert norm_res.out is not None and ref_res.out is not None and results["data"].out
    (staging / "reference").mkdir(parents=True)
    shutil.copyfile(results["data"].out / "samples.npz", staging / "reference" / "inputs.npz")
    shutil.copyfile(ref_res.out / "outputs.npz", staging / "reference" / "outputs.npz")
    if config.include_reference_model:
        for f in sorted(norm_res.out.iterdir()):
            shutil.copyfile(f, staging / "reference" / f.name)

    artifacts: list[ArtifactEntry] = []
    measurements: dict[str, ArtifactMeasurements] = {}
    libs = library_versions()
    for nid in sorted(n for n in g if g.nodes[n]["kind"] == "compile"):
        node = g.nodes[nid]
        target, variant, vcfg = node["target"], node["variant"], node["config"]
        aid = f"{target}/{variant}"
        comp = results[nid]
        base = {
            "id": aid,
            "target": target,
            "variant": variant,
            "backend": vcfg.compile.backend,
            "precision": vcfg.precision,
            "passes": [p.name for p in vcfg.passes],
        }
        if comp.ok:
            out = comp.expect(CompileOutput)
            folder = f"artifacts/{target}.{variant}"
            assert comp.out is not None
            shutil.copytree(comp.out, staging / folder)
            entry = ArtifactEntry(
                **base | {"precision": out.precision},
                status=out.status,
                directory=folder,
                files=_files(staging, folder),
                requirements=out.requirements,
                runtime=out.runtime,
                portable=out.portable,
                backend_version=out.backend_version,
                notes=out.notes,
            )
            libs.update(out.backend_version)
            ver = results[f"{aid}:verify"]
            if ver.ok:
                vout = ver.expect(VerifyOutput)
                measurements[aid] = ArtifactMeasurements(
                    parity=[vout.parity], latency=[vout.latency] if vout.latency else []
                )
            else:
                failed = ParityRecord(status="error", reason=ver.reason)
                measurements[aid] = ArtifactMeasurements(parity=[failed])
        else:
            status: ArtifactStatus = "skipped" if comp.status == "skipped" else "failed"
            entry = ArtifactEntry(**base, status=status, reason=comp.reason, install=comp.install)
        artifacts.append(entry)

    manifest = Manifest(
        package=config.package.model_copy(
            update={"name": config.package.name or Path(source_name).stem}
        ),
        source=SourceInfo(
            name=source_name,
            kind=source_kind,  # type: ignore[arg-type]
            sha256=source_digest,
            normalized_sha256=file_sha256(norm_res.out / MODEL_FILE),
            opset=norm.opset,
            ir_version=norm.ir_version,
            producer=norm.producer,
        ),
        provenance=Provenance(
            tool=f"compile-pkg {__version__}",
            libraries=dict(sorted(libs.items())),
            config=config.model_dump(mode="json"),
            config_sha256=config.digest(),
            source_git_commit=_git_commit(source_path),
        ),
        policy=config.policy(),
        contract=norm.contract,
        reference=ReferenceInfo(
            description="normalized fp32 model on onnxruntime CPUExecutionProvider",
            runtime=ref_res.expect(ReferenceOutput).runtime,
            samples=data.samples,
            samples_source=data.samples_source,
            calibration_source=data.calibration_source,
            files=_files(staging, "reference"),
        ),
        artifacts=artifacts,
        target_notes=dict(sorted(g.graph.get("target_notes", {}).items())),
        measurements=measurements,
        build=BuildLog(
            started_at=started_at,
            finished_at=now_utc(),
            source_path=str(source_path),
            nodes=[
                NodeLog(node=n, status=r.status, seconds=r.seconds, reason=r.reason, key=r.key)
                for n, r in results.items()
            ],
            pass_log={
                n: r.output.record for n, r in results.items() if isinstance(r.output, PassOutput)
            },
            normalize=norm.record,
        ),
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
