"""`compile-pkg compare PKG_A PKG_B`: artifacts of two packages side by side.

Reads each package's manifest.json (compiler.serving.manifest) and lines artifacts up by id
(`<target>/<variant>`): status, precision, the latest parity record (status, worst cosine and
top-1 over outputs, max abs error) and the latest latency record (p50), with B's p50 as a
ratio of A's. Latency is comparable only when both were measured on the same kind of host,
so each latency cell names a mismatch when the hosts differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from compiler.core.records import LatencyRecord, ParityRecord
from compiler.serving.manifest import Manifest, read_manifest

__all__ = ["CompareRow", "compare_markdown", "compare_packages", "compare_rows"]


@dataclass(frozen=True)
class CompareRow:
    artifact: str
    a: dict[str, str]
    b: dict[str, str]
    p50_ratio: str  # B / A, "" when either is missing or the hosts differ


def _latest_parity(m: Manifest, artifact: str) -> ParityRecord | None:
    records = m.measured(artifact).parity
    return records[-1] if records else None


def _latest_latency(m: Manifest, artifact: str) -> LatencyRecord | None:
    records = m.measured(artifact).latency
    return records[-1] if records else None


def _host_key(record: LatencyRecord) -> tuple[str, str, int]:
    host = record.host
    return host.arch, host.cpu_model, host.cpu_count


def _cells(m: Manifest, artifact: str) -> dict[str, str]:
    entry = next((a for a in m.artifacts if a.id == artifact), None)
    if entry is None:
        return {"status": "absent"}
    cells = {"status": entry.status, "precision": entry.precision}
    parity = _latest_parity(m, artifact)
    if parity:
        outs = [o for o in parity.outputs.values() if not o.error]
        cells["parity"] = parity.status
        cosines = [o.cosine for o in outs]
        top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
        errs = [o.max_abs_err for o in outs]
        if cosines:
            cells["cosine"] = f"{min(cosines):.6f}"
        if top1:
            cells["top1"] = f"{min(top1):.3f}"
        if errs:
            cells["max_abs_err"] = f"{max(errs):.2e}"
    latency = _latest_latency(m, artifact)
    if latency:
        cells["p50_ms"] = f"{latency.artifact.p50_ms:.3f}"
    return cells


def compare_rows(a: Path, b: Path) -> tuple[Manifest, Manifest, list[CompareRow]]:
    ma, mb = read_manifest(a), read_manifest(b)
    ids = sorted({x.id for x in ma.artifacts} | {x.id for x in mb.artifacts})
    rows = []
    for artifact in ids:
        ca, cb = _cells(ma, artifact), _cells(mb, artifact)
        la, lb = _latest_latency(ma, artifact), _latest_latency(mb, artifact)
        ratio = ""
        if "p50_ms" in ca and "p50_ms" in cb and la and lb:
            if _host_key(la) == _host_key(lb):
                ratio = f"{float(cb['p50_ms']) / float(ca['p50_ms']):.2f}x"
            else:
                ratio = "hosts differ"
        rows.append(CompareRow(artifact, ca, cb, ratio))
    return ma, mb, rows


_COLUMNS = ("status", "precision", "parity", "cosine", "top1", "max_abs_err", "p50_ms")


def _title(ma: Manifest, mb: Manifest, a: Path, b: Path) -> str:
    same = (
        "same source model" if ma.source.sha256 == mb.source.sha256 else "DIFFERENT source models"
    )
    return f"A = {a}  vs  B = {b}  ({same})"


def _pair(a: str, b: str) -> str:
    return a if a == b else f"{a} -> {b}"


def compare_packages(a: Path, b: Path) -> Table:
    """A rich table: one row per artifact id; a cell reads `A -> B` where the two differ."""
    ma, mb, rows = compare_rows(a, b)
    table = Table(title=_title(ma, mb, a, b))
    for col in ("artifact", *_COLUMNS, "p50 B/A"):
        table.add_column(col)
    for r in rows:
        cells = [_pair(r.a.get(col, "-"), r.b.get(col, "-")) for col in _COLUMNS]
        table.add_row(r.artifact, *cells, r.p50_ratio or "-")
    return table


def compare_markdown(a: Path, b: Path) -> str:
    """The same comparison as a markdown table, for reports and pull requests."""
    ma, mb, rows = compare_rows(a, b)
    head = ["artifact", *(f"{c} {s}" for c in _COLUMNS for s in "AB"), "p50 B/A"]
    lines = [
        f"**{_title(ma, mb, a, b)}**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [x for col in _COLUMNS for x in (r.a.get(col, "-"), r.b.get(col, "-"))]
        lines.append("| " + " | ".join([r.artifact, *cells, r.p50_ratio or "-"]) + " |")
    return "\n".join(lines) + "\n"
