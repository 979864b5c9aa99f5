"""Human- and machine-readable reports: reports/parity.json, latency.json and report.md."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.core.parity import OutputParity
from compiler.serving.manifest import Manifest
from compiler.serving.selection import parity_verdict

__all__ = ["ArtifactRow", "artifact_rows", "render_markdown", "write_reports"]


def _dump(path: Path, obj: Any) -> None:
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8"
    )


@dataclass(frozen=True)
class ArtifactRow:
    """One artifact's line in the tables of `report.md`, `inspect` and the build summary."""

    id: str
    backend: str
    precision: str
    status: str
    reason: str
    parity: str
    parity_how: str
    max_abs_err: float | None
    cosine: float | None
    top1: float | None
    p50_ms: float | None
    p99_ms: float | None
    ref_p50_ms: float | None
    speedup: float | None
    size_bytes: int


def artifact_rows(m: Manifest) -> list[ArtifactRow]:
    rows = []
    for a in m.artifacts:
        verdict, how = parity_verdict(m, a.id)
        lat = m.measured(a.id).latency[-1] if m.measured(a.id).latency else None
        worst = _worst_output(m, a.id)
        rows.append(
            ArtifactRow(
                id=a.id,
                backend=a.backend,
                precision=a.precision,
                status=a.status,
                reason=a.reason,
                parity=verdict if a.status in ("built", "deferred") else "-",
                parity_how=how,
                max_abs_err=worst.max_abs_err if worst else None,
                cosine=worst.cosine if worst else None,
                top1=worst.top1_agreement if worst else None,
                p50_ms=lat.artifact.p50_ms if lat else None,
                p99_ms=lat.artifact.p99_ms if lat else None,
                ref_p50_ms=lat.reference.p50_ms if lat and lat.reference else None,
                speedup=lat.speedup_vs_reference if lat else None,
                size_bytes=sum(f.size for f in a.files),
            )
        )
    return rows


def _worst_output(m: Manifest, aid: str) -> OutputParity | None:
    recs = [r for r in m.measured(aid).parity if r.outputs]
    if not recs:
        return None
    return max(recs[-1].outputs.values(), key=lambda o: o.max_abs_err)


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def render_markdown(m: Manifest) -> str:
    lines = [
        f"# {m.package.name} {m.package.version}",
        "",
        f"Source: `{m.source.name}` (sha256 {m.source.sha256[:16]}…, opset {m.source.opset}). "
        f"Reference: {m.reference.description}, {m.reference.samples} samples "
        f"({m.reference.samples_source}).",
    ]
    if m.reference.samples_source == "generated":
        lines += [
            "",
            "> **Warning:** parity was measured on generated inputs, not real data: "
            "figures show numeric agreement, not task accuracy.",
        ]
    if m.reference.calibration_source == "generated" and any(
        a.precision == "int8" for a in m.artifacts
    ):
        lines += [
            "",
            "> **Warning:** int8 artifacts were calibrated on generated data; their "
            "accuracy figures are not meaningful. Pass --calibration-data.",
        ]
    lines += ["", "## Contract", "", "| io | name | dtype | shape |", "|---|---|---|---|"]
    for kind, specs in (("in", m.contract.inputs), ("out", m.contract.outputs)):
        for t in specs:
            lines.append(f"| {kind} | {t.name} | {t.dtype} | {t.shape} |")
    if m.contract.dims:
        lines += [
            "",
            "Dims: "
            + ", ".join(
                f"`{k}` {v.min}..{v.max} (opt {v.opt})" for k, v in m.contract.dims.items()
            ),
        ]
    lines += [
        "",
        "## Artifacts",
        "",
        "| artifact | backend | precision | status | parity | max abs err | cosine | top-1 | p50 ms | p99 ms | ref p50 ms | speedup | size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in artifact_rows(m):
        status = r.status + (f": {r.reason}" if r.reason else "")
        lines.append(
            f"| {r.id} | {r.backend} | {r.precision} | {status} | {r.parity} "
            f"| {_fmt(r.max_abs_err, '.2e')} | {_fmt(r.cosine, '.6f')} | {_fmt(r.top1)} "
            f"| {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {_fmt(r.ref_p50_ms)} "
            f"| {_fmt(r.speedup, '.2f')} | {r.size_bytes} |"
        )
    for target, note in m.target_notes.items():
        lines.append(f"\nTarget `{target}`: {note}")
    lines += ["", "## Where each figure was measured", ""]
    for aid, recs in m.measurements.items():
        for rec in recs.parity:
            h = rec.host
            where = f"{h.arch} {h.cpu_model}".strip() if h else "?"
            extra = f" — {rec.note}" if rec.note else ""
            reason = f" ({rec.reason})" if rec.reason else ""
            emulated = f", emulated: {h.emulated}" if h and h.emulated else ""
            lines.append(
                f"- `{aid}` parity {rec.status}{reason}, mode {rec.mode}, "
                f"on {where}{emulated} at {h.measured_at if h else '?'}{extra}"
            )
        for lat in recs.latency:
            h = lat.host
            lines.append(
                f"- `{aid}` latency on {h.arch} {h.cpu_model} x{h.cpu_count}, "
                f"batch {lat.batch}, {lat.artifact.runs} runs, runner {lat.runner}; {lat.method}"
            )
    if m.selection.order or m.selection.excluded:
        lines += ["", f"## Selection on the build host ({m.selection.host})", ""]
        for i, c in enumerate(m.selection.order, 1):
            lines.append(f"{i}. `{c.id}` — {c.why}")
        for c in m.selection.excluded:
            lines.append(f"- excluded `{c.id}` — {c.why}")
    return "\n".join(lines) + "\n"


def write_reports(package: Path, m: Manifest) -> None:
    reports = package / "reports"
    reports.mkdir(exist_ok=True)
    _dump(
        reports / "parity.json",
        {
            aid: [p.model_dump(mode="json") for p in r.parity]
            for aid, r in sorted(m.measurements.items())
        },
    )
    _dump(
        reports / "latency.json",
        {
            aid: [x.model_dump(mode="json") for x in r.latency]
            for aid, r in sorted(m.measurements.items())
        },
    )
    (reports / "report.md").write_text(render_markdown(m), encoding="utf-8")
