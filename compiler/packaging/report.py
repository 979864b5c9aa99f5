"""Human- and machine-readable reports: reports/parity.json, latency.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compiler.serving.selection import parity_verdict

if TYPE_CHECKING:
    from compiler.serving.manifest import Manifest

__all__ = ["write_reports", "artifact_rows", "render_markdown"]


def _dump(path: Path, obj: Any) -> None:
    path.write_text(
        json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8"
    )


def _latest_latency(m: Manifest, aid: str) -> dict[str, Any] | None:
    recs = m.measurements.get(aid, {}).get("latency", [])
    return recs[-1] if recs else None


def artifact_rows(m: Manifest) -> list[dict[str, Any]]:
    rows = []
    for a in m.artifacts:
        verdict, how = parity_verdict(m, a.id)
        lat = _latest_latency(m, a.id)
        worst = _worst_output(m, a.id)
        rows.append(
            {
                "id": a.id,
                "backend": a.backend,
                "precision": a.precision,
                "status": a.status,
                "reason": a.reason,
                "parity": verdict if a.status in ("built", "deferred") else "-",
                "parity_how": how,
                "max_abs_err": worst.get("max_abs_err"),
                "cosine": worst.get("cosine"),
                "top1": worst.get("top1_agreement"),
                "p50_ms": lat["artifact"]["p50_ms"] if lat else None,
                "p99_ms": lat["artifact"]["p99_ms"] if lat else None,
                "ref_p50_ms": lat.get("reference", {}).get("p50_ms") if lat else None,
                "speedup": lat.get("speedup_vs_reference") if lat else None,
                "size_bytes": sum(f.size for f in a.files),
            }
        )
    return rows


def _worst_output(m: Manifest, aid: str) -> dict[str, Any]:
    recs = [r for r in m.measurements.get(aid, {}).get("parity", []) if r.get("outputs")]
    if not recs:
        return {}
    outs = recs[-1]["outputs"]
    return max(outs.values(), key=lambda o: o.get("max_abs_err") or 0.0)


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
        status = r["status"] + (f": {r['reason']}" if r["reason"] else "")
        lines.append(
            f"| {r['id']} | {r['backend']} | {r['precision']} | {status} | {r['parity']} "
            f"| {_fmt(r['max_abs_err'], '.2e')} | {_fmt(r['cosine'], '.6f')} | {_fmt(r['top1'])} "
            f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['ref_p50_ms'])} "
            f"| {_fmt(r['speedup'], '.2f')} | {r['size_bytes']} |"
        )
    for target, note in m.target_notes.items():
        lines.append(f"\nTarget `{target}`: {note}")
    lines += ["", "## Where each figure was measured", ""]
    for aid, recs in m.measurements.items():
        for rec in recs.get("parity", []):
            h = rec.get("host", {})
            where = f"{h.get('arch', '?')} {h.get('cpu_model', '')}".strip()
            extra = f" — {rec['note']}" if rec.get("note") else ""
            reason = f" ({rec['reason']})" if rec.get("reason") else ""
            lines.append(
                f"- `{aid}` parity {rec.get('status')}{reason}, mode {rec.get('mode', '-')}, "
                f"on {where}{', emulated: ' + h['emulated'] if h.get('emulated') else ''}"
                f" at {h.get('measured_at', '?')}{extra}"
            )
        for rec in recs.get("latency", []):
            h = rec.get("host", {})
            lines.append(
                f"- `{aid}` latency on {h.get('arch')} {h.get('cpu_model')} x{h.get('cpu_count')}, "
                f"batch {rec.get('batch')}, {rec['artifact']['runs']} runs, runner {rec.get('runner')}; "
                f"{rec.get('method', '')}"
            )
    if m.selection:
        lines += ["", f"## Selection on the build host ({m.selection.get('host', '')})", ""]
        for i, c in enumerate(m.selection.get("order", []), 1):
            lines.append(f"{i}. `{c['id']}` — {c['why']}")
        for c in m.selection.get("excluded", []):
            lines.append(f"- excluded `{c['id']}` — {c['why']}")
    return "\n".join(lines) + "\n"


def write_reports(package: Path, m: Manifest) -> None:
    reports = package / "reports"
    reports.mkdir(exist_ok=True)
    _dump(
        reports / "parity.json",
        {aid: r.get("parity", []) for aid, r in sorted(m.measurements.items())},
    )
    _dump(
        reports / "latency.json",
        {aid: r.get("latency", []) for aid, r in sorted(m.measurements.items())},
    )
    (reports / "report.md").write_text(render_markdown(m), encoding="utf-8")
