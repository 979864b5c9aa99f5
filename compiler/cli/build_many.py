"""`compile-pkg build-many PORTFOLIO.yaml -o OUTDIR`: one package per model of a portfolio
(compiler/portfolio.py), on this host or a Ray cluster (`--executor ray://HOST:PORT`), with a
summary table: each model built or failed with the reason, and per target the artifact the
build host would serve with its speedup over the reference."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Literal

import click
from rich.table import Table
from rich.text import Text

from compiler.cli.app import (
    JsonDoc,
    charts_home,
    cli,
    console,
    emit_json,
    json_doc,
    out_console,
    output_options,
    say,
    ui,
)
from compiler.cli.capture import third_party_output
from compiler.cli.gate import gate_artifacts, strict_failures
from compiler.core.errors import CompilePkgError
from compiler.core.host import probe_host
from compiler.core.records import NodeResult
from compiler.portfolio import ModelSummary, build_portfolio, load_portfolio
from compiler.serving.manifest import read_manifest

__all__ = ["BuildManyDoc", "build_many"]

_STYLE = {"ran": "green", "cached": "cyan", "failed": "red", "skipped": "yellow"}


@json_doc
class BuildManyDoc(JsonDoc):
    """`compile-pkg build-many --json`: each model's package (or why none), its picks per
    target, and the models the strict gate failed."""

    command: Literal["build-many"] = "build-many"
    ok: bool
    exit_code: int
    portfolio: str
    output: str
    executor: str
    strict: bool
    models: list[ModelSummary]
    strict_failures: dict[str, list[str]]  # model -> its artifacts not built and passed


class _Progress:
    """One stderr line per finished node, prefixed with its model (builds may interleave)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __call__(self, name: str, nid: str, res: NodeResult | None) -> None:
        if res is None:
            return
        reason = f"  {res.reason}" if res.reason else ""
        with self._lock:
            say(f"{name}: {res.status:>7} {nid} {res.seconds:.2f}s{reason}", _STYLE[res.status])


def _strict(models: list[ModelSummary], allow_unavailable: bool) -> dict[str, list[str]]:
    """Per built model, its artifacts the strict gate refuses (as `build --strict`)."""
    host = probe_host()
    failing: dict[str, list[str]] = {}
    for s in models:
        if s.status != "built":
            continue
        verdicts = gate_artifacts(read_manifest(Path(s.package)), host)
        bad = strict_failures(verdicts, allow_unavailable)
        if bad:
            failing[s.name] = [f"{v.artifact} {v.outcome}: {v.reason}" for v in bad]
    return failing


def _table(models: list[ModelSummary], failing: dict[str, list[str]]) -> None:
    table = Table(title="portfolio")
    for col in ("model", "status", "target", "picked", "speedup"):
        table.add_column(col)
    for s in models:
        status = "failed: " + s.reason if s.status == "failed" else "built"
        if s.failed_nodes:
            status += f" ({len(s.failed_nodes)} node(s) failed)"
        if s.name in failing:
            status += f"; strict: {len(failing[s.name])} artifact(s) not passed"
        if not s.picks:
            table.add_row(*map(Text, (s.name, status, "-", "-", "-")))
        for i, p in enumerate(s.picks):
            picked = p.artifact or f"none: {p.why}"
            cells = (s.name if i == 0 else "", status if i == 0 else "", p.target, picked)
            table.add_row(*map(Text, (*cells, p.speedup_text)))
    out_console.print(table)


@cli.command("build-many")
@click.argument("portfolio", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="one package per model"
)
@click.option(
    "--executor",
    "executor",
    metavar="ray[://HOST:PORT]|processes|in-process",
    help="where nodes run; ray: the cluster the portfolio's executor.address names (empty: "
    "$RAY_ADDRESS, else a local one), ray://HOST:PORT: that cluster through Ray Client "
    "[default: the portfolio's executor, else the first model's config's]",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="node cache; on Ray, a folder every Ray node sees at the same path (shared filesystem)",
)
@click.option("--no-cache", is_flag=True, help="neither read nor write the node cache")
@click.option(
    "--strict", is_flag=True, help="exit 1 unless every artifact of every model is built and passed"
)
@click.option(
    "--allow-unavailable",
    is_flag=True,
    help="with --strict: accept artifacts this host lacks hardware or runtime for",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="append third-party output (library logs) here",
)
@output_options()
def build_many(
    portfolio: Path,
    output: Path,
    executor: str | None,
    cache_dir: Path | None,
    no_cache: bool,
    strict: bool,
    allow_unavailable: bool,
    log_path: Path | None,
) -> None:
    """Build every model PORTFOLIO lists (a YAML file: `models:` with model, name, config,
    targets, sample_data...), one package each under OUTPUT. All entries are checked first."""

    plan = load_portfolio(portfolio, output, executor=executor, cache_dir=cache_dir)
    charts_home(tempfile.mkdtemp(prefix="charts-") if no_cache else cache_dir)  # as `build`
    where = plan.executor.kind + (f" at {plan.executor.address}" if plan.executor.address else "")
    say(f"building {len(plan.models)} model(s) on the {where} executor")
    with third_party_output(log_path, to_stderr=ui.level >= 1 and not log_path):
        models = build_portfolio(
            plan, cache_dir=cache_dir, use_cache=not no_cache, on_event=_Progress()
        )
    failing = _strict(models, allow_unavailable) if strict else {}
    broken = [s.name for s in models if s.status == "failed"]
    error = None
    if broken:
        error = CompilePkgError(f"{len(broken)} of {len(models)} model(s) not built: {broken}")
    elif failing:
        error = CompilePkgError(
            f"--strict: {len(failing)} of {len(models)} model(s) have artifacts not built and "
            f"passed: {sorted(failing)}"
        )
    if ui.json:
        emit_json(
            BuildManyDoc(
                ok=error is None,
                exit_code=error.exit_code if error else 0,
                portfolio=str(portfolio),
                output=str(output),
                executor=where,
                strict=strict,
                models=models,
                strict_failures=failing,
            )
        )
    else:
        _table(models, failing)
    for name, lines in failing.items():
        for line in lines:
            console.print(f"strict: {name}: {line}", style="red")
    say(f"packages written under {output}")
    if error is not None:
        if ui.json:  # the document above already says so: no second one
            console.print(f"error: {error}", style="bold red")
            raise SystemExit(error.exit_code)
        raise error
