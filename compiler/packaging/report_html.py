"""reports/report.html: one self-contained page people look at (inline CSS and SVG, nothing
fetched at view time): the contract, the pass DAG, the artifacts table with status and reasons,
latency per artifact next to the reference, parity per output, the build timeline. Figures
come from the same rows as report.md (compiler/packaging/rows.py); pictures from
compiler/packaging/report_charts.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from pydantic import ValidationError

from compiler.core.parity import OutputParity
from compiler.packaging.report_charts import (
    Bar,
    DagNode,
    TimelineNode,
    charts_available,
    dag_svg,
    error_svg,
    latency_svg,
    timeline_svg,
)
from compiler.packaging.rows import ArtifactRow, artifact_rows
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import build_graph
from compiler.serving.manifest import Manifest

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2} td.num{text-align:right;font-variant-numeric:tabular-nums}
.passed,.built,.ran{color:#2d7a46}.failed{color:#b52b27}.skipped,.cached{color:#777}
.deferred,.not-verified{color:#a86a00} .warn{background:#fff4d6;padding:.5em 1em}
figure{margin:0 0 1.5em} svg{max-width:100%;height:auto} .note{color:#666;font-size:12px}
"""


def _num(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    """A table of already-escaped cells; columns in `numeric` right-aligned."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>\n"
        for r in rows
    )
    return f"<table><tr>{th}</tr>\n{body}</table>\n"


def _status(value: str) -> str:
    return f'<span class="{escape(value)}">{escape(value)}</span>'


def _contract(m: Manifest) -> str:
    rows = [
        (kind, escape(t.name), escape(t.dtype), escape(str(t.shape)), escape(t.kind or "-"))
        for kind, specs in (("in", m.contract.inputs), ("out", m.contract.outputs))
        for t in specs
    ]
    html = _table(("io", "name", "dtype", "shape", "kind"), rows, set())
    if m.contract.dims:
        dims = [
            (escape(k), str(v.min), str(v.opt), str(v.max), str(v.step),
             escape(m.contract.dim_origins[k].source) if k in m.contract.dim_origins else "-")
            for k, v in m.contract.dims.items()
        ]  # fmt: skip
        html += _table(("dim", "min", "opt", "max", "step", "from"), dims, {1, 2, 3, 4})
    return html


def _artifacts(rows: list[ArtifactRow]) -> str:
    head = ("artifact", "backend", "precision", "status", "reason", "parity", "measured",
            "max abs err", "cosine", "top-1", "p50 ms", "p99 ms", "ref p50 ms", "speedup", "size")  # fmt: skip
    cells = [
        (
            escape(r.id), escape(r.backend), escape(r.precision), _status(r.status),
            escape(r.reason + (f" (install: {r.install})" if r.install else "")),
            _status(r.parity), escape(f"{r.parity_mode} {r.parity_host}".strip() or "-"),
            _num(r.max_abs_err, ".2e"), _num(r.cosine, ".6f"), _num(r.top1),
            _num(r.p50_ms), _num(r.p99_ms), _num(r.ref_p50_ms), escape(r.speedup_text),
            escape(r.size),
        )
        for r in rows
    ]  # fmt: skip
    return _table(head, cells, set(range(7, 15)))


def _task(rows: list[ArtifactRow]) -> str:
    """The task metric per artifact (report.md's "Task" section says what each column is)."""
    scored = [(r, r.task) for r in rows if r.task is not None]
    if not scored:
        return '<p class="note">no task metric was scored (parity.task.metric and labels)</p>'
    head = ("artifact", "task", "artifact", "reference", "samples", "worse / better",
            "worse on at most (95 %)", "why")  # fmt: skip
    cells = [
        (
            escape(r.id), _status(t.status), _num(t.artifact, ".4g"), _num(t.reference, ".4g"),
            str(t.samples), escape(r.task_paired_text), escape(r.task_bound_text),
            escape(r.task_why or "-"),
        )
        for r, t in scored
    ]  # fmt: skip
    note = (
        '<p class="note">worse / better: samples on which the artifact\'s output alone lowers or '
        "raises the reference's score; worse on at most: how large the share of inputs like "
        "these on which the artifact does worse can be, at 95 % confidence: more labelled "
        "samples narrow it. Metric: "
        + escape(", ".join(sorted({t.metric for _, t in scored})))
        + "</p>"
    )
    return _table(head, cells, {2, 3, 4, 6}) + note


def _dag(m: Manifest) -> str:
    try:
        config = BuildConfig.model_validate(m.provenance.config)
        g = build_graph(config, list(config.targets))
    except (ValidationError, KeyError, ValueError):  # a config from another version
        return '<p class="note">the pass DAG cannot be rebuilt from this package\'s config</p>'
    status = {n.node: n.status for n in m.build.nodes}
    nodes = [DagNode(n.id, n.stage, tuple(n.parents), status.get(n.id, "")) for n in g.order()]
    return _figure(dag_svg(nodes), "green: ran, blue: cached, grey: skipped, red: failed")


def _latency(rows: list[ArtifactRow]) -> str:
    bars = [
        Bar(r.id, r.p50_ms, r.p99_ms, r.ref_p50_ms, r.speedup_text)
        for r in rows
        if r.p50_ms is not None and r.p99_ms is not None
    ]
    hosts = sorted({r.latency_host for r in rows if r.p50_ms is not None})
    cells = [
        (escape(b.label), _num(b.p50_ms), _num(b.p99_ms), _num(b.ref_p50_ms), escape(b.speedup))
        for b in bars
    ]
    caption = "measured on " + "; ".join(hosts) if hosts else ""
    return _figure(latency_svg(bars), escape(caption)) + _table(
        ("artifact", "p50 ms", "p99 ms", "ref p50 ms", "speedup [interval]"), cells, {1, 2, 3}
    )


def _latest_outputs(m: Manifest) -> dict[str, dict[str, OutputParity]]:
    out = {}
    for aid, recs in m.measurements.items():
        with_outputs = [r for r in recs.parity if r.outputs]
        if with_outputs:
            out[aid] = dict(with_outputs[-1].outputs)
    return out


def _parity(m: Manifest) -> str:
    latest = _latest_outputs(m)
    if not latest:
        return "<p>No parity was measured.</p>"
    cells = [
        (
            escape(aid), escape(name), escape(o.kind), _status("passed" if o.passed else "failed"),
            _num(o.max_abs_err, ".2e"), _num(o.mean_abs_err, ".2e"), _num(o.rel_l2, ".2e"),
            _num(o.cosine, ".6f"), _num(o.top1_agreement), _num(o.top5_agreement),
            escape("; ".join(o.failures) or o.error or ""),
        )
        for aid, outputs in latest.items()
        for name, o in outputs.items()
    ]  # fmt: skip
    errors = {aid: {n: o.max_abs_err for n, o in outs.items()} for aid, outs in latest.items()}
    head = ("artifact", "output", "kind", "verdict", "max abs err", "mean abs err", "rel l2",
            "cosine", "top-1", "top-5", "failures")  # fmt: skip
    return _figure(error_svg(errors), "") + _table(head, cells, set(range(4, 10)))


def _timeline(m: Manifest) -> str:
    nodes = [TimelineNode(n.node, n.status, n.seconds) for n in m.build.nodes]
    cells = [(escape(n.id), _status(n.status), _num(n.seconds, ".2f")) for n in nodes]
    return _figure(timeline_svg(nodes), "") + _table(("node", "status", "seconds"), cells, {2})


def _figure(svg: str, caption: str) -> str:
    if not svg:
        return (
            '<p class="note">(no picture: matplotlib is not installed here)</p>'
            if not charts_available()
            else ""
        )
    cap = f"<figcaption class=note>{caption}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>\n"


def _warnings(m: Manifest) -> str:
    if m.reference.samples_source != "generated":
        return ""
    return (
        '<p class="warn"><b>Warning:</b> parity was measured on generated inputs, not real '
        "data: figures show numeric agreement, not task accuracy.</p>"
    )


def render_html(m: Manifest) -> str:
    rows = artifact_rows(m)
    title = escape(f"{m.package.name} {m.package.version}")
    sections = [
        ("Contract", _contract(m)),
        ("Pass DAG", _dag(m)),
        ("Artifacts", _artifacts(rows)),
        ("Task", _task(rows)),
        ("Latency", _latency(rows)),
        ("Parity per output", _parity(m)),
        ("Build timeline", _timeline(m)),
    ]
    body = "".join(f"<h2>{escape(h)}</h2>\n{html}" for h, html in sections)
    where = escape(
        f"Source {m.source.name} (sha256 {m.source.sha256[:16]}…, opset {m.source.opset}); "
        f"reference: {m.reference.description}, {m.reference.samples} samples "
        f"({m.reference.samples_source}); selection host: {m.selection.host or '?'}"
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{title}</h1>\n<p>{where}</p>\n{_warnings(m)}{body}</body></html>\n"
    )
