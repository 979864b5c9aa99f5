"""Commands that check or ship a package: `verify` and `pack` (`inspect` and `compare`:
inspect_cmd.py; `run`: run_cmd.py). Each prints its result on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import click
from rich.table import Table

from compiler.cli.app import (
    JsonDoc,
    cli,
    console,
    echo_result,
    emit_json,
    json_doc,
    out_console,
    output_options,
    say,
    trust_options,
    trust_policy,
    ui,
)
from compiler.core.latency import SpeedupInterval
from compiler.packaging.reverify import VerifyReport, import_gpu_records, verify_package
from compiler.packaging.write import pack as pack_

__all__ = ["pack", "verify"]


@json_doc
class VerifyDoc(VerifyReport, JsonDoc):
    """`compile-pkg verify --json`: every artifact's re-verification on this host and its
    verdict against the package's (`ok`, `improved`, `known-failure`, `not-checked` pass the
    gate; `regressed` and `newly-failed` fail it, listed in `regressions`)."""

    command: Literal["verify"] = "verify"


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--no-latency", is_flag=True, help="parity only")
@click.option(
    "--emulate",
    type=click.Choice(["aarch64"]),
    default=None,
    help="also run the artifacts of this arch with its runtimes under qemu user-mode "
    "emulation (parity only; set up with scripts/setup_emulation.sh)",
)
@click.option(
    "--records",
    type=click.Path(path_type=Path),
    default=None,
    help="where to write this run's records (default: PACKAGE.verify.json beside the package)",
)
@click.option(
    "--update",
    is_flag=True,
    help="append the records to the package's own manifest instead (the package changes)",
)
@click.option(
    "--gpu-record",
    "gpu_records",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="instead of measuring here: record and judge a scripts/gpu_verify.py run taken on a "
    "GPU host (its JSON; repeatable), so serving there can rank by it",
)
@trust_options()
@output_options()
def verify(
    package: Path,
    no_latency: bool,
    emulate: str | None,
    records: Path | None,
    update: bool,
    gpu_records: tuple[Path, ...],
    trusted_keys: tuple[Path, ...],
    allow_unsigned_native: bool,
) -> None:
    """A release gate: re-check hashes, re-measure parity and latency on this host, and judge
    each artifact against the verdict the package recorded. Exit 0 when every artifact meets
    it, 1 on a regression or a newly failed artifact. The package is not rewritten."""

    if update and records is not None:
        raise click.UsageError("--records and --update exclude each other")
    if gpu_records and (emulate or no_latency):
        raise click.UsageError("--gpu-record measures nothing here: drop --emulate/--no-latency")
    if gpu_records:
        report = import_gpu_records(package, list(gpu_records), records=records, update=update)
    else:
        report = verify_package(
            package,
            measure_latency=not no_latency,
            records=records,
            update=update,
            emulate=emulate,
            trust=trust_policy(trusted_keys, allow_unsigned_native),
        )
    if ui.json:
        emit_json(VerifyDoc.model_validate({**report.model_dump(), "command": "verify"}))
    else:
        _print_checks(report, "the GPU host" if gpu_records else "this host")
        if emulate:
            _verify_emulated(report, emulate)
    say(f"records written to {report.records}")
    if not report.ok:
        named = "; ".join(f"{c.id} {c.verdict}: {c.why}" for c in report.artifacts if c.bad)
        console.print(
            f"error: {package}: {len(report.regressions)} artifact(s) fail the gate: {named}"
        )
        sys.exit(1)


def _speedup(s: SpeedupInterval | None) -> str:
    return "-" if s is None else f"{s.estimate:.2f}x [{s.low:.2f}-{s.high:.2f}]"


def _print_checks(report: VerifyReport, where: str) -> None:
    """The table, then one unwrapped line per artifact whose verdict is not plain `ok`."""
    on = report.host
    gpu = f", {on.gpus[0].name}" if on.gpus else ""
    table = Table(title=f"verification on {where} ({on.arch} {on.cpu_model}{gpu})")
    for col in ("artifact", "verdict", "files", "parity", "recorded", "speedup", "at build"):
        table.add_column(col)
    for c in report.artifacts:
        lat = c.latency
        table.add_row(
            c.id,
            c.verdict,
            "ok" if c.files == "ok" else ("-" if c.files == "-" else "FAILED"),
            f"{c.parity.status} ({c.parity.mode})" if c.parity else "-",
            c.recorded_parity,
            _speedup(lat.speedup if lat else None) if not lat or lat.measured else lat.status,
            _speedup(c.recorded_speedup),
        )
    out_console.print(table)
    notes = [f"{c.id}: {c.verdict}: {c.why}\n" for c in report.artifacts if c.verdict != "ok"]
    echo_result("".join(notes))


def _verify_emulated(report: VerifyReport, arch: str) -> None:
    """Print the emulated parity of `arch` artifacts (gated with the rest in `report`)."""

    rows = [(c.id, c.emulated) for c in report.artifacts if c.emulated is not None]
    emulated = next((r.host.emulated for _, r in rows if r.host), "")
    table = Table(title=f"verification under emulation: {emulated or arch}")
    for col in ("artifact", "parity", "mode", "runtime", "max abs err", "reason"):
        table.add_column(col)
    for aid, rec in rows:
        worst = max((o.max_abs_err for o in rec.outputs.values() if not o.error), default=None)
        why = rec.reason or "; ".join(f for o in rec.outputs.values() for f in o.failures)
        table.add_row(
            aid,
            rec.status,
            rec.mode,
            rec.emulation.runtime if rec.emulation else "-",
            f"{worst:.3g}" if worst is not None else "-",
            why,
        )
    out_console.print(table)


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="archive path (default PACKAGE.tar.gz)"
)
@output_options(with_json=False)
def pack(package: Path, output: Path | None) -> None:
    """Write a reproducible .tar.gz of PACKAGE (sorted entries, fixed mtimes and owners)."""

    archive = pack_(package, output or package.with_name(package.name + ".tar.gz"))
    echo_result(f"{archive}\n")
