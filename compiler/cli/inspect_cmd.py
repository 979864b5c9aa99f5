"""`compile-pkg inspect PKG` and `compile-pkg compare A B`: what a package holds, how each
artifact was made and measured, and two packages side by side with a release gate."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click
from rich.table import Table

from compiler.cli.app import (
    JsonDoc,
    cli,
    console,
    emit_json,
    json_doc,
    out_console,
    output_options,
    ui,
)
from compiler.cli.tables import print_artifacts, print_recipes
from compiler.core.contract import Contract
from compiler.core.errors import CompilePkgError
from compiler.packaging.compare import CompareReport, compare_packages, compare_table
from compiler.packaging.rows import ArtifactRow, artifact_rows
from compiler.serving.manifest import Manifest, SelectionChoice, read_manifest
from compiler.serving.signing import TrustPolicy, check_signatures

__all__ = ["CompareDoc", "InspectDoc", "compare", "inspect"]


@json_doc
class InspectDoc(JsonDoc):
    """`compile-pkg inspect --json`: the package's identity, contract and artifact rows (how
    each was made and measured)."""

    command: Literal["inspect"] = "inspect"
    package: str
    name: str
    version: str
    source: str
    source_sha256: str
    core_sha256: str
    contract: Contract
    artifacts: list[ArtifactRow]
    target_notes: dict[str, str]
    selection_host: str
    selection: list[SelectionChoice]
    signatures: str  # who signed the core, judged by $COMPILE_PKG_TRUSTED_KEYS


def _print_package(m: Manifest, rows: list[ArtifactRow], signatures: str) -> None:
    out_console.print(
        f"[bold]{m.package.name}[/] {m.package.version}  source {m.source.name} "
        f"(sha256 {m.source.sha256[:12]}…, opset {m.source.opset})  core {m.core_sha256[:12]}…"
    )
    out_console.print(f"signatures: {signatures}", markup=False, soft_wrap=True)
    table = Table(title="contract")
    for col in ("io", "name", "dtype", "shape", "kind"):  # kind: what parity judges it as
        table.add_column(col)
    for io, specs in (("input", m.contract.inputs), ("output", m.contract.outputs)):
        for t in specs:
            table.add_row(io, t.name, t.dtype, str(t.shape), t.kind or "-")
    out_console.print(table)
    if m.contract.dims:
        out_console.print(
            "dims: " + ", ".join(f"{k}={v.describe()}" for k, v in m.contract.dims.items())
        )
    print_artifacts(rows)
    print_recipes(rows)
    for target, note in m.target_notes.items():
        out_console.print(f"target {target}: {note}", markup=False, soft_wrap=True)
    if m.selection.order:
        out_console.print(
            f"selection on the build host ({m.selection.host}):", markup=False, soft_wrap=True
        )
        for i, c in enumerate(m.selection.order, 1):
            out_console.print(f"  {i}. {c.id}: {c.why}", markup=False, soft_wrap=True)


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@output_options()
def inspect(package: Path) -> None:
    """Summarize a package: contract, artifacts, how each was made, parity, latency, size."""

    m = read_manifest(package)
    rows = artifact_rows(m)
    signatures = check_signatures(package, m, TrustPolicy.from_env()).describe()
    if not ui.json:
        _print_package(m, rows, signatures)
        return
    emit_json(
        InspectDoc(
            package=str(package),
            name=m.package.name,
            version=m.package.version,
            source=m.source.name,
            source_sha256=m.source.sha256,
            core_sha256=m.core_sha256,
            contract=m.contract,
            artifacts=rows,
            target_notes=m.target_notes,
            selection_host=m.selection.host,
            selection=m.selection.order,
            signatures=signatures,
        )
    )


@json_doc
class CompareDoc(CompareReport, JsonDoc):
    """`compile-pkg compare --json`: both packages' artifacts lined up by id, and with
    `--max-regression` the regressions that fail the gate."""

    command: Literal["compare"] = "compare"


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option(
    "--max-regression",
    metavar="PERCENT",
    default=None,
    help="release gate: exit 1 when B regresses on A: an artifact gone or no longer built, "
    "parity no longer passed, or p50 latency slower by more than PERCENT (e.g. 10%%) on the "
    "same kind of host",
)
@output_options()
def compare(a: Path, b: Path, max_regression: str | None) -> None:
    """Parity and latency of two packages side by side (B against A)."""

    report = compare_packages(a, b, max_slowdown=_percent(max_regression))
    if ui.json:
        emit_json(CompareDoc.model_validate(report.model_dump()))
    else:
        out_console.print(compare_table(report))
    for r in report.regressions:
        console.print(f"regression: {r.artifact}: {r.detail}", style="red")
    if report.regressions:
        error = CompilePkgError(
            f"compare: {len(report.regressions)} regression(s) of {b} against {a} "
            f"beyond --max-regression {max_regression}"
        )
        if ui.json:  # the document above lists them: no second document on stdout
            console.print(f"error: {error}", style="bold red")
            raise SystemExit(error.exit_code)
        raise error


def _percent(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip().rstrip("%"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: give a percentage, e.g. 10 or 10%") from None
    if value < 0:
        raise click.BadParameter(f"{text!r}: a slowdown allowance cannot be negative")
    return value / 100
