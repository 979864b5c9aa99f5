"""`compile-pkg verify PKG`: re-check every file's sha256, re-measure parity against the
stored reference outputs and latency next to the stored reference model, on this host,
and append the records (naming this host) to the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.core.errors import IntegrityError
from compiler.core.host import probe_host
from compiler.measure.verify import verify_artifact
from compiler.packaging.package import rewrite_manifest
from compiler.pipeline.config import LatencyConfig, ParityConfig
from compiler.pipeline.dag import unpack_feeds
from compiler.pipeline.data import read_npz
from compiler.pipeline.normalize import MODEL_FILE
from compiler.serving.loader import check_files
from compiler.serving.manifest import read_manifest

__all__ = ["verify_package"]


def verify_package(package: Path, *, measure_latency: bool = True) -> list[dict[str, Any]]:
    m = read_manifest(package)
    host = probe_host()
    cfg = m.provenance.config
    parity_cfg = ParityConfig.model_validate(cfg.get("parity", {}))
    latency_cfg = LatencyConfig.model_validate(cfg.get("latency", {}))
    inputs = unpack_feeds(read_npz(package / "reference" / "inputs.npz"))
    refs = unpack_feeds(read_npz(package / "reference" / "outputs.npz"))
    ref_model = package / "reference" / MODEL_FILE
    rows = []
    for a in m.artifacts:
        if a.status not in ("built",):
            continue
        row: dict[str, Any] = {"id": a.id}
        try:
            check_files(package, a)
            row["files"] = "ok"
        except IntegrityError as exc:
            row |= {"files": str(exc), "parity": "error"}
            m.measurements.setdefault(a.id, {}).setdefault("parity", []).append(
                {
                    "status": "error",
                    "reason": str(exc),
                    "host": host.model_dump(exclude={"hostname"}),
                }
            )
            rows.append(row)
            continue
        assert a.requirements is not None
        rec = verify_artifact(
            backend=a.backend,
            artifact_dir=package / a.directory,
            runtime=a.runtime,
            requirements=a.requirements,
            portable=a.portable,
            precision=a.precision,
            contract=m.contract,
            inputs=inputs,
            ref_outputs=refs,
            ref_model=ref_model if ref_model.is_file() else None,
            parity_cfg=parity_cfg,
            latency_cfg=latency_cfg,
            host=host,
            measure_latency=measure_latency,
        )
        meas = m.measurements.setdefault(a.id, {"parity": [], "latency": []})
        meas.setdefault("parity", []).append(rec["parity"])
        if rec["latency"]:
            meas.setdefault("latency", []).append(rec["latency"])
        row["parity"] = rec["parity"]["status"]
        row["mode"] = rec["parity"].get("mode", "-")
        if rec["latency"]:
            row["p50_ms"] = rec["latency"]["artifact"]["p50_ms"]
            row["speedup"] = rec["latency"].get("speedup_vs_reference")
        rows.append(row)
    rewrite_manifest(package, m)
    return rows
