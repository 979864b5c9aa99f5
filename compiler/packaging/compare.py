"""`compile-pkg compare PKG_A PKG_B`: artifacts of two packages side by side, and a release gate.

Reads each package's manifest.json (compiler.serving.manifest) and lines artifacts up by id
(`<target>/<variant>`): status, precision, the latest decisive parity record (status, worst
cosine and top-1 over outputs, max abs error) and the latest latency record (p50), with B's
p50 as a ratio of A's. Latency is comparable only when both were measured on the same kind of
host (arch, CPU model, core count), so a ratio is given only then.

With a slowdown allowance (`--max-regression`), B regresses on A where an artifact A built is
absent or not built in B, where A's parity passed and B's did not, or where B's p50 is slower
than A's by more than the allowance on the same kind of host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table
from rich.text import Text

from compiler.core.records import LatencyRecord, ParityRecord
from compiler.serving.manifest import Manifest, read_manifest

__all__ = [
    "Cells",
    "CompareReport",
    "CompareRow",
    "Regression",
    "compare_markdown",
    "compare_packages",
    "compare_table",
    "find_regressions",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Cells(_Record):
    """One package's facts about one artifact (`status: absent` when it has no such id)."""

    status: str
    precision: str = ""
    parity: str = ""
    cosine: float | None = None
    top1: float | None = None
    max_abs_err: float | None = None
    p50_ms: float | None = None
    host: str = ""  # the latency host's kind: arch, CPU model, cores


class CompareRow(_Record):
    artifact: str
    a: Cells
    b: Cells
    p50_ratio: float | None = None  # B / A, on the same kind of host only
    hosts_differ: bool = False


class Regression(_Record):
    artifact: str
    what: Literal["missing", "parity", "latency"]
    detail: str


class CompareReport(_Record):
    a: str
    b: str
    same_source: bool
    rows: list[CompareRow]
    max_slowdown: float | None = None  # the allowance, as a fraction (0.1: 10 % slower)
    regressions: list[Regression] = Field(default_factory=list)


def _latest_parity(m: Manifest, artifact: str) -> ParityRecord | None:
    records = m.measured(artifact).parity
    decisive = [r for r in records if r.decisive]
    return decisive[-1] if decisive else (records[-1] if records else None)


def _latest_latency(m: Manifest, artifact: str) -> LatencyRecord | None:
    records = [r for r in m.measured(artifact).latency if r.artifact is not None]
    return records[-1] if records else None


def _host_kind(record: LatencyRecord) -> str:
    host = record.host
    return f"{host.arch} {host.cpu_model} x{host.cpu_count}"


def _cells(m: Manifest, artifact: str) -> Cells:
    entry = next((a for a in m.artifacts if a.id == artifact), None)
    if entry is None:
        return Cells(status="absent")
    parity = _latest_parity(m, artifact)
    outs = [o for o in parity.outputs.values() if not o.error] if parity else []
    top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
    latency = _latest_latency(m, artifact)
    return Cells(
        status=entry.status,
        precision=entry.precision,
        parity=parity.status if parity else "",
        cosine=min((o.cosine for o in outs), default=None),
        top1=min(top1, default=None),
        max_abs_err=max((o.max_abs_err for o in outs), default=None),
        p50_ms=latency.artifact.p50_ms if latency and latency.artifact else None,
        host=_host_kind(latency) if latency else "",
    )


def _row(ma: Manifest, mb: Manifest, artifact: str) -> CompareRow:
    ca, cb = _cells(ma, artifact), _cells(mb, artifact)
    ratio, differ = None, False
    if ca.p50_ms and cb.p50_ms is not None:
        if ca.host == cb.host:
            ratio = cb.p50_ms / ca.p50_ms
        else:
            differ = True
    return CompareRow(artifact=artifact, a=ca, b=cb, p50_ratio=ratio, hosts_differ=differ)


def find_regressions(rows: list[CompareRow], max_slowdown: float) -> list[Regression]:
    """Where B is worse than A: gone or not built, parity lost, or slower beyond the allowance."""
    found = []
    for r in rows:
        built_a = r.a.status in ("built", "deferred")
        if built_a and r.b.status not in ("built", "deferred"):
            found.append(
                Regression(
                    artifact=r.artifact,
                    what="missing",
                    detail=f"{r.a.status} in A, {r.b.status} in B",
                )
            )
            continue
        if r.a.parity == "passed" and r.b.parity != "passed":
            found.append(
                Regression(
                    artifact=r.artifact,
                    what="parity",
                    detail=f"parity passed in A, {r.b.parity or 'no record'} in B",
                )
            )
        if r.p50_ratio is not None and r.p50_ratio > 1 + max_slowdown:
            found.append(
                Regression(
                    artifact=r.artifact,
                    what="latency",
                    detail=f"p50 {r.a.p50_ms:.3f} -> {r.b.p50_ms:.3f} ms ({r.p50_ratio:.2f}x, "
                    f"allowed {1 + max_slowdown:.2f}x)",
                )
            )
    return found


def compare_packages(a: Path, b: Path, max_slowdown: float | None = None) -> CompareReport:
    """Both packages' artifacts lined up by id; regressions judged when `max_slowdown` is set."""
    ma, mb = read_manifest(a), read_manifest(b)
    ids = sorted({x.id for x in ma.artifacts} | {x.id for x in mb.artifacts})
    rows = [_row(ma, mb, artifact) for artifact in ids]
    return CompareReport(
        a=str(a),
        b=str(b),
        same_source=ma.source.sha256 == mb.source.sha256,
        rows=rows,
        max_slowdown=max_slowdown,
        regressions=find_regressions(rows, max_slowdown) if max_slowdown is not None else [],
    )


_COLUMNS = ("status", "precision", "parity", "cosine", "top1", "max_abs_err", "p50_ms")
_FORMATS = {"cosine": ".6f", "top1": ".3f", "max_abs_err": ".2e", "p50_ms": ".3f"}


def _text(cells: Cells, column: str) -> str:
    value = getattr(cells, column)
    if value is None or value == "":
        return "-"
    spec = _FORMATS.get(column)
    return format(value, spec) if spec else str(value)


def _ratio(row: CompareRow) -> str:
    if row.p50_ratio is not None:
        return f"{row.p50_ratio:.2f}x"
    return "hosts differ" if row.hosts_differ else "-"


def _title(report: CompareReport) -> str:
    same = "same source model" if report.same_source else "DIFFERENT source models"
    return f"A = {report.a}  vs  B = {report.b}  ({same})"


def _pair(a: str, b: str) -> str:
    return a if a == b else f"{a} -> {b}"


def compare_table(report: CompareReport) -> Table:
    """A rich table: one row per artifact id; a cell reads `A -> B` where the two differ."""
    table = Table(title=_title(report))
    for col in ("artifact", *_COLUMNS, "p50 B/A"):
        table.add_column(col)
    for r in report.rows:
        cells = [_pair(_text(r.a, col), _text(r.b, col)) for col in _COLUMNS]
        table.add_row(*map(Text, (r.artifact, *cells, _ratio(r))))
    return table


def compare_markdown(report: CompareReport) -> str:
    """The same comparison as a markdown table, for reports and pull requests."""
    head = ["artifact", *(f"{c} {s}" for c in _COLUMNS for s in "AB"), "p50 B/A"]
    lines = [
        f"**{_title(report)}**",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in report.rows:
        cells = [_text(x, col) for col in _COLUMNS for x in (r.a, r.b)]
        lines.append("| " + " | ".join([r.artifact, *cells, _ratio(r)]) + " |")
    for g in report.regressions:
        lines.append(f"\n- regression `{g.artifact}` ({g.what}): {g.detail}")
    return "\n".join(lines) + "\n"
