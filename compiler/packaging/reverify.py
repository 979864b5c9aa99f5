"""`compile-pkg verify PKG`: re-check every file's sha256, re-measure parity against the
stored reference outputs and latency next to the stored reference model, on this host,
and append the records (naming this host) to the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler.core.errors import IntegrityError
from compiler.core.feeds import read_feeds_npz
from compiler.core.host import probe_host
from compiler.core.records import ParityRecord
from compiler.measure.verify import measured_on, verify_artifact
from compiler.packaging.write import rewrite_manifest
from compiler.pipeline.normalize import MODEL_FILE
from compiler.serving.loader import check_files
from compiler.serving.manifest import read_manifest

__all__ = ["VerifyRow", "verify_package"]


@dataclass(frozen=True)
class VerifyRow:
    """One artifact's re-verification on this host."""

    id: str
    files: str  # "ok", or why the files failed their check
    parity: ParityRecord
    p50_ms: float | None = None
    speedup: float | None = None

    @property
    def bad(self) -> bool:
        return self.files != "ok" or self.parity.status in ("failed", "error")


def verify_package(package: Path, *, measure_latency: bool = True) -> list[VerifyRow]:
    m = read_manifest(package)
    host = probe_host()
    inputs = read_feeds_npz(package / "reference" / "inputs.npz")
    refs = read_feeds_npz(package / "reference" / "outputs.npz")
    ref_model = package / "reference" / MODEL_FILE
    rows = []
    for a in m.artifacts:
        if a.status != "built":
            continue
        try:
            check_files(package, a)
        except IntegrityError as exc:
            record = ParityRecord(status="error", reason=str(exc), host=measured_on(host))
            m.measured(a.id).parity.append(record)
            rows.append(VerifyRow(a.id, str(exc), record))
            continue
        assert a.requirements is not None and a.runtime is not None
        out = verify_artifact(
            backend=a.backend,
            runtime=a.runtime,
            requirements=a.requirements,
            portable=a.portable,
            artifact_dir=package / a.directory,
            precision=a.precision,
            contract=m.contract,
            inputs=inputs,
            ref_outputs=refs,
            ref_model=ref_model if ref_model.is_file() else None,
            parity=m.policy.parity,
            latency=m.policy.latency,
            host=host,
            measure_latency=measure_latency,
        )
        meas = m.measured(a.id)
        meas.parity.append(out.parity)
        if out.latency:
            meas.latency.append(out.latency)
        lat = out.latency
        rows.append(
            VerifyRow(
                a.id,
                "ok",
                out.parity,
                p50_ms=lat.artifact.p50_ms if lat else None,
                speedup=lat.speedup_vs_reference if lat else None,
            )
        )
    rewrite_manifest(package, m)
    return rows
