"""Human- and machine-readable reports: reports/parity.json, latency.json, report.md and
report.html (compiler/packaging/report_html.py); how each artifact was made and where each
figure was measured: compiler/packaging/rows.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from compiler.packaging.report_html import render_html
from compiler.packaging.rows import ArtifactRow, artifact_rows, describe_host, short_value
from compiler.serving.manifest import Manifest

__all__ = ["render_markdown", "write_reports"]


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _data_warnings(m: Manifest) -> list[str]:
    lines = []
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
    return lines


def _contract(m: Manifest) -> list[str]:
    lines = ["", "## Contract", "", "| io | name | dtype | shape | kind |", "|---|---|---|---|---|"]
    for io, specs in (("in", m.contract.inputs), ("out", m.contract.outputs)):
        for t in specs:
            lines.append(f"| {io} | {t.name} | {t.dtype} | {t.shape} | {t.kind or '-'} |")
    if m.contract.dims:
        dims = ", ".join(f"`{k}` {v.describe()}" for k, v in m.contract.dims.items())
        lines += ["", f"Dims: {dims}"]
    return lines


def _artifact_table(rows: list[ArtifactRow]) -> list[str]:
    lines = [
        "",
        "## Artifacts",
        "",
        "| artifact | backend | precision | status | parity | measured | max abs err | cosine "
        "| top-1 | p50 ms | p99 ms | ref p50 ms | speedup | size |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r.status + (f": {r.reason}" if r.reason else "")
        lines.append(
            f"| {r.id} | {r.backend} | {r.precision} | {status} | {r.parity} "
            f"| {r.parity_mode or '-'} | {_fmt(r.max_abs_err, '.2e')} | {_fmt(r.cosine, '.6f')} "
            f"| {_fmt(r.top1)} | {_fmt(r.p50_ms)} | {_fmt(r.p99_ms)} | {_fmt(r.ref_p50_ms)} "
            f"| {r.speedup_text} | {r.size} |"
        )
    return lines


def _task(rows: list[ArtifactRow]) -> list[str]:
    """The task metric per artifact, with what a pass on these samples says and no more."""
    scored = [(r, r.task) for r in rows if r.task is not None]
    if not scored:
        return [
            "",
            "## Task",
            "",
            "No task metric was scored: the verdicts rest on the outputs' closeness. Give the "
            "model's task metric (parity.task.metric) and labelled samples (labels.json beside "
            "--sample-data) to judge the artifacts by the model's job.",
        ]
    lines = [
        "",
        "## Task",
        "",
        "The build's task metric on the labelled samples, the artifact's outputs against the "
        "reference's on the same samples. `worse / better`: samples on which the artifact's "
        "output alone lowers or raises the reference's score (the paired check). `worse on at "
        "most`: how large the share of inputs like these on which the artifact does worse "
        "can be, at 95 % confidence, given that count: more labelled samples narrow it.",
        "",
        "| artifact | task | artifact | reference | samples | worse / better "
        "| worse on at most (95 %) | why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r, t in scored:
        lines.append(
            f"| {r.id} | {t.status} | {_fmt(t.artifact, '.4g')} | {_fmt(t.reference, '.4g')} "
            f"| {t.samples} | {r.task_paired_text} | {r.task_bound_text} | {r.task_why or '-'} |"
        )
    metrics = sorted({t.metric for _, t in scored})
    lines += ["", "Metric: " + ", ".join(f"`{name}`" for name in metrics) + "."]
    return lines


def _how_made(rows: list[ArtifactRow]) -> list[str]:
    lines = ["", "## How each artifact was made", ""]
    for r in rows:
        backend = ", ".join(f"{k}={short_value(v)}" for k, v in r.compile_settings.items())
        lines.append(
            f"- `{r.id}` ({r.precision}): {' -> '.join([p.name for p in r.passes] + [r.backend])}"
            + (f"; {r.backend} settings: {backend}" if backend else "")
        )
        for p in r.passes:
            items = {**p.settings, **p.facts}
            if items or p.skipped:
                detail = "; ".join(f"{k}: {short_value(v)}" for k, v in items.items())
                skipped = f" (skipped: {p.skipped})" if p.skipped else ""
                lines.append(f"  - {p.name}{skipped}: {detail or 'defaults'}")
    return lines


def _serving(rows: list[ArtifactRow]) -> list[str]:
    """Throughput by serving batch size and the runtime settings chosen by measurement."""
    measured = [r for r in rows if r.throughput or r.tuned]
    if not measured:
        return []
    lines = [
        "",
        "## Serving: throughput by batch size, tuned runtime settings",
        "",
        "Items/s of each artifact next to the reference at the same batch, in one run (the "
        "ratio with its interval); runtime settings adopted only when faster than the "
        "defaults beyond the interval, and applied by serving only on a host like this one.",
        "",
        "| artifact | batch | items/s | ref items/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in measured:
        for b in r.throughput:
            lines.append(
                f"| {r.id} | {b.batch} | {_fmt(b.items_per_s, '.1f')} "
                f"| {_fmt(b.reference_items_per_s, '.1f')} | {b.text} |"
            )
    lines.append("")
    lines += [f"- `{r.id}` runtime settings: {r.tuned}" for r in measured if r.tuned]
    return lines


def _where_measured(m: Manifest) -> list[str]:
    lines = ["", "## Where each figure was measured", ""]
    for aid, recs in m.measurements.items():
        for rec in recs.parity:
            extra = f" — {rec.note}" if rec.note else ""
            reason = f" ({rec.reason or rec.basis})" if rec.reason or rec.basis else ""
            at = rec.host.measured_at if rec.host else "?"
            lines.append(
                f"- `{aid}` parity {rec.status}{reason}, {rec.mode}, "
                f"on {describe_host(rec.host)} at {at}{extra}"
            )
        for lat in recs.latency:
            runs = f"{lat.artifact.runs} runs" if lat.artifact else "not measured"
            lines.append(
                f"- `{aid}` latency on {describe_host(lat.host)}, batch {lat.batch}, "
                f"{runs}, runner {lat.runner}; {lat.method}"
            )
            if lat.tuning is not None and lat.tuning.method:
                lines.append(
                    f"- `{aid}` runtime settings swept on {describe_host(lat.tuning.host)}: "
                    f"{lat.tuning.method}"
                )
    return lines


def render_markdown(m: Manifest) -> str:
    rows = artifact_rows(m)
    lines = [
        f"# {m.package.name} {m.package.version}",
        "",
        f"Source: `{m.source.name}` (sha256 {m.source.sha256[:16]}…, opset {m.source.opset}). "
        f"Reference: {m.reference.description}, {m.reference.samples} samples "
        f"({m.reference.samples_source}).",
        *_data_warnings(m),
        *_contract(m),
        *_artifact_table(rows),
        *_task(rows),
    ]
    for target, note in m.target_notes.items():
        lines.append(f"\nTarget `{target}`: {note}")
    lines += _serving(rows) + _how_made(rows) + _where_measured(m)
    if m.selection.order or m.selection.excluded:
        lines += ["", f"## Selection on the build host ({m.selection.host})", ""]
        for i, c in enumerate(m.selection.order, 1):
            lines.append(f"{i}. `{c.id}` — {c.why}")
        for c in m.selection.excluded:
            lines.append(f"- excluded `{c.id}` — {c.why}")
    return "\n".join(lines) + "\n"


def _dump(path: Path, obj: Any) -> None:
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8"
    )


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
    (reports / "report.html").write_text(render_html(m), encoding="utf-8")
