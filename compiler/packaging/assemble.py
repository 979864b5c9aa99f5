"""Assemble a package from a build's graph and node results: its files in a staging folder and
its manifest (written by `write.finish_package`).

Layout:
    manifest.json
    artifacts/<target>.<variant>/...      one folder per built artifact
    reference/inputs.npz, outputs.npz     sample inputs and fp32 reference outputs
    reference/model.onnx                  the normalized fp32 model (optional)
    reference/labels.json                 the samples' labels, when the user gave them
    reference/scores.npz                  the scores behind index outputs (core/parity.py)
    reports/parity.json, latency.json, report.md

Every file is listed in the manifest with its sha256 (reports by `write.finish_package`).
Identical files (an OpenVINO `model.bin` shared by two precisions, an arm artifact byte-equal
to the cpu one) are stored once: hard links to one copy, one member when packed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from compiler import __version__
from compiler.core.errors import PackageError
from compiler.core.feeds import read_npz, write_npz
from compiler.core.git import head_commit
from compiler.core.hashing import file_sha256
from compiler.core.parity import SCORES_FILE
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
from compiler.packaging.write import library_versions
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import ArtifactNodes, BuildGraph
from compiler.pipeline.index_scores import SCORES_MODEL, SOURCES_FILE
from compiler.pipeline.normalize import MODEL_FILE
from compiler.pipeline.userdata import LABELS_FILE
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
)
from compiler.serving.selection import select_order

__all__ = ["assemble"]


def _files(root: Path, folder: str) -> list[FileEntry]:
    base = root / folder
    return [
        FileEntry(path=p.relative_to(root).as_posix(), sha256=file_sha256(p), size=p.stat().st_size)
        for p in sorted(base.rglob("*"))
        if p.is_file()
    ]


def _head(results: Mapping[str, NodeResult], nid: str, what: str) -> Path:
    """The output folder of a node every package needs; PackageError if it did not run."""
    result = results[nid]
    if not result.ok or result.out is None:
        raise PackageError(f"{what} failed: {result.reason}")
    return result.out


def _copy_reference(
    staging: Path, g: BuildGraph, results: Mapping[str, NodeResult], with_model: bool
) -> None:
    normalized = _head(results, g.normalize.id, "normalize")
    data = _head(results, g.data.id, "sample data")
    reference = _head(results, g.reference.id, "reference run")
    (staging / "reference").mkdir(parents=True)
    # deflated: sample inputs are mostly padding (layout_cdla's 16 pages: 89 MiB -> 1 MiB);
    # the outputs are not (0.9x), and are copied as they are
    write_npz(staging / "reference" / "inputs.npz", read_npz(data / "samples.npz"), compress=True)
    shutil.copyfile(reference / "outputs.npz", staging / "reference" / "outputs.npz")
    if (reference / SCORES_FILE).is_file():  # the scores behind index outputs (parity.py)
        shutil.copyfile(reference / SCORES_FILE, staging / "reference" / SCORES_FILE)
    if (data / LABELS_FILE).is_file():  # the task metric's labels, one per sample
        shutil.copyfile(data / LABELS_FILE, staging / "reference" / LABELS_FILE)
    if with_model:
        for f in sorted(normalized.iterdir()):
            if f.name not in (SCORES_MODEL, SOURCES_FILE):  # the build's own: scores.npz is made
                shutil.copyfile(f, staging / "reference" / f.name)


def _failed_cause(g: BuildGraph, results: Mapping[str, NodeResult], nid: str) -> str:
    """The earliest failed node among `nid` and its ancestors, as 'node: reason' ('' if none
    failed: the node was skipped for a missing backend or hardware)."""
    failed, stack, seen = [], [nid], set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if results[n].status == "failed":
            failed.append(n)
        stack.extend(g.parents(n))
    order = {node.id: i for i, node in enumerate(g.order())}
    first = min(failed, key=lambda n: order[n], default="")
    return f"{first} failed: {results[first].reason}" if first else ""


def _artifact(
    staging: Path, g: BuildGraph, a: ArtifactNodes, results: Mapping[str, NodeResult]
) -> tuple[ArtifactEntry, ArtifactMeasurements | None]:
    """The artifact's manifest entry (its files copied in when built) and its measurements."""
    entry = ArtifactEntry(
        id=a.id,
        target=a.target,
        variant=a.variant,
        backend=a.config.compile.backend,
        precision=a.config.precision,
        passes=[p.name for p in a.config.passes],
        status="failed",
    )
    comp = results[a.compile.id]
    if not comp.ok:
        cause = _failed_cause(g, results, a.compile.id)
        status: ArtifactStatus = "failed" if cause else "skipped"
        reason = comp.reason if comp.status == "failed" else cause or comp.reason
        update = {"status": status, "reason": reason, "install": "" if cause else comp.install}
        return entry.model_copy(update=update), None
    out = comp.expect(CompileOutput)
    folder = f"artifacts/{a.target}.{a.variant}"
    assert comp.out is not None
    shutil.copytree(comp.out, staging / folder)
    entry = entry.model_copy(
        update={
            "precision": out.precision,
            "status": out.status,
            "directory": folder,
            "files": _files(staging, folder),
            "requirements": out.requirements,
            "runtime": out.runtime,
            "portable": out.portable,
            "backend_version": out.backend_version,
            "notes": out.notes,
            "contract": out.contract,
        }
    )
    ver = results[a.verify.id]
    if not ver.ok:
        return entry, ArtifactMeasurements(parity=[ParityRecord(status="error", reason=ver.reason)])
    measured = ver.expect(VerifyOutput)
    if measured.runtime is not None:  # the settings its verdict holds for
        entry = entry.model_copy(update={"runtime": measured.runtime})
    latency = [measured.latency] if measured.latency else []
    return entry, ArtifactMeasurements(parity=[measured.parity], latency=latency)


def _build_log(
    results: Mapping[str, NodeResult], started_at: str, source_path: Path, norm: NormalizeOutput
) -> BuildLog:
    return BuildLog(
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
    )


def assemble(
    staging: Path,
    *,
    g: BuildGraph,
    results: Mapping[str, NodeResult],
    config: BuildConfig,
    source_name: str,
    source_kind: str,
    source_digest: str,
    source_path: Path,
    started_at: str,
) -> Manifest:
    """Fill `staging` with the package's files and return its manifest (not yet written)."""
    _copy_reference(staging, g, results, config.include_reference_model)
    norm = results[g.normalize.id].expect(NormalizeOutput)
    data = results[g.data.id].expect(DataOutput)

    artifacts: list[ArtifactEntry] = []
    measurements: dict[str, ArtifactMeasurements] = {}
    libs = library_versions()
    for a in g.artifacts:
        entry, measured = _artifact(staging, g, a, results)
        artifacts.append(entry)
        libs.update(entry.backend_version)
        if measured is not None:
            measurements[a.id] = measured

    manifest = Manifest(
        package=config.package.model_copy(
            update={"name": config.package.name or Path(source_name).stem}
        ),
        source=SourceInfo(
            name=source_name,
            kind=source_kind,  # type: ignore[arg-type]
            sha256=source_digest,
            normalized_sha256=file_sha256(_head(results, g.normalize.id, "normalize") / MODEL_FILE),
            opset=norm.opset,
            ir_version=norm.ir_version,
            producer=norm.producer,
        ),
        provenance=Provenance(
            tool=f"compile-pkg {__version__}",
            libraries=dict(sorted(libs.items())),
            config=config.model_dump(mode="json"),
            config_sha256=config.digest(),
            source_git_commit=head_commit(source_path),
        ),
        policy=config.policy(),
        contract=norm.contract,
        configured_dims=sorted(set(config.dims) & set(norm.contract.symbolic_dims())),
        reference=ReferenceInfo(
            description="normalized fp32 model on onnxruntime CPUExecutionProvider",
            runtime=results[g.reference.id].expect(ReferenceOutput).runtime,
            samples=data.samples,
            samples_source=data.samples_source,
            calibration_source=data.calibration_source,
            files=_files(staging, "reference"),
        ),
        artifacts=artifacts,
        target_notes=dict(sorted(g.target_notes.items())),
        measurements=measurements,
        build=_build_log(results, started_at, source_path, norm),
    )
    manifest.selection = select_order(manifest)
    _store_once(staging, manifest.all_files())
    return manifest


def _store_once(staging: Path, files: list[FileEntry]) -> None:
    """Hard-link every file to the first (by path) with the same sha256 and size."""
    first: dict[tuple[str, int], Path] = {}
    for f in sorted(files, key=lambda f: f.path):
        path = staging / f.path
        kept = first.setdefault((f.sha256, f.size), path)
        if kept != path and not os.path.samefile(kept, path):
            tmp = path.with_name(f".{path.name}.link")
            os.link(kept, tmp)
            os.replace(tmp, path)
