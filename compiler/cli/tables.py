"""The artifact tables `build` and `inspect` print on stdout (cells are plain text: a `[...]`
in a reason or a node list is not rich markup)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from compiler.cli.app import out_console
from compiler.packaging.rows import ArtifactRow

__all__ = ["print_artifacts", "print_recipes"]


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{format(value, spec)}{suffix}"


def print_artifacts(rows: list[ArtifactRow]) -> None:
    """Status, parity with how it was measured, latency and size per artifact."""
    table = Table(title="artifacts")
    for col in (
        "artifact",
        "backend",
        "precision",
        "status",
        "parity",
        "measured",
        "max abs err",
        "p50 ms",
        "speedup",
        "size",
    ):
        table.add_column(col)
    for r in rows:
        status = r.status + (f": {r.reason[:70]}" if r.reason else "")
        cells = (
            r.id,
            r.backend,
            r.precision,
            status,
            r.parity,
            r.parity_mode if r.parity_mode not in ("", "none") else "-",
            _num(r.max_abs_err, ".2e"),
            _num(r.p50_ms, ".3f"),
            r.speedup_text,
            r.size,
        )
        table.add_row(*map(Text, cells))
    out_console.print(table)
    _print_task(rows)
    # batch 1 alone repeats the speedup column: the table is for larger batches or a sweep
    served = [r for r in rows if r.tuned or any(b.batch != 1 for b in r.throughput)]
    if served:
        serving = Table(title="serving: items/s by batch over the reference, tuned settings")
        for col in ("artifact", "throughput by batch", "runtime settings"):
            serving.add_column(col, overflow="fold")
        for r in served:
            batches = "; ".join(f"b{b.batch}: {b.text}" for b in r.throughput) or "-"
            serving.add_row(*map(Text, (r.id, batches, r.tuned or "-")))
        out_console.print(serving)


def _print_task(rows: list[ArtifactRow]) -> None:
    """The task metric per artifact, where the build scored one (report.md's Task section)."""
    scored = [(r, r.task) for r in rows if r.task is not None and r.task.status != "not-run"]
    if not scored:
        return
    table = Table(title=f"task: {scored[0][1].metric} on the labelled samples")
    columns = ("artifact", "task", "score vs reference", "samples", "worse / better")
    for col in (*columns, "worse on <= (95 %)"):
        table.add_column(col)
    for r, t in scored:
        score = f"{_num(t.artifact, '.4g')} vs {_num(t.reference, '.4g')}"
        cells = (r.id, t.status, score, str(t.samples), r.task_paired_text, r.task_bound_text)
        table.add_row(*map(Text, cells))
    out_console.print(table)


def print_recipes(rows: list[ArtifactRow]) -> None:
    """How each artifact was made and where its figures were measured."""
    table = Table(title="how each artifact was made and measured")
    for col in ("artifact", "recipe", "parity measured on", "latency measured on"):
        table.add_column(col, overflow="fold")
    for r in rows:
        measured = r.parity_host and r.parity_mode not in ("", "none")
        parity = f"{r.parity_mode}: {r.parity_host}" if measured else (r.parity_reason or "-")
        table.add_row(*map(Text, (r.id, r.recipe, parity, r.latency_host or "-")))
    out_console.print(table)
