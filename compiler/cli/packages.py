"""Commands on packages: `inspect`, `verify`, `run`, `pack`, `compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.table import Table

from compiler.cli.app import cli, console, out_console, print_artifacts
from compiler.core.errors import CompilePkgError
from compiler.core.feeds import read_feeds_npz, read_npz, write_npz
from compiler.packaging.compare import compare_packages
from compiler.packaging.emulated import verify_emulated
from compiler.packaging.reverify import verify_package
from compiler.packaging.write import pack as pack_
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest

__all__ = ["compare", "inspect", "pack", "run", "verify"]


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
def inspect(package: Path) -> None:
    """Summarize a package: contract, artifacts, status, parity, latency."""

    m = read_manifest(package)
    out_console.print(
        f"[bold]{m.package.name}[/] {m.package.version}  source {m.source.name} "
        f"(sha256 {m.source.sha256[:12]}…, opset {m.source.opset})  core {m.core_sha256[:12]}…"
    )
    table = Table(title="contract")
    for col in ("io", "name", "dtype", "shape"):
        table.add_column(col)
    for kind, specs in (("input", m.contract.inputs), ("output", m.contract.outputs)):
        for t in specs:
            table.add_row(kind, t.name, t.dtype, str(t.shape))
    out_console.print(table)
    if m.contract.dims:
        out_console.print(
            "dims: "
            + ", ".join(f"{k}={v.min}..{v.max} (opt {v.opt})" for k, v in m.contract.dims.items())
        )
    print_artifacts(m)
    for target, note in m.target_notes.items():
        out_console.print(f"target {target}: {note}")
    if m.selection.order:
        out_console.print(f"selection on the build host ({m.selection.host}):")
        for i, c in enumerate(m.selection.order, 1):
            out_console.print(f"  {i}. {c.id}: {c.why}", highlight=False)


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
def verify(package: Path, no_latency: bool, emulate: str | None) -> None:
    """Re-check hashes and re-measure parity and latency on this host; append the records."""

    results = verify_package(package, measure_latency=not no_latency)
    table = Table(title="verification on this host")
    for col in ("artifact", "files", "parity", "mode", "p50 ms", "speedup"):
        table.add_column(col)
    bad = any(r.bad for r in results)
    for r in results:
        table.add_row(
            r.id,
            r.files,
            r.parity.status,
            r.parity.mode,
            f"{r.p50_ms:.3f}" if r.p50_ms is not None else "-",
            f"{r.speedup:.2f}x" if r.speedup is not None else "-",
        )
    out_console.print(table)
    if emulate:
        bad = _verify_emulated(package, emulate) or bad
    if bad:
        raise CompilePkgError(f"{package}: verification found failures (see the table)")


def _verify_emulated(package: Path, arch: str) -> bool:
    """Print the emulated parity table; True when an artifact failed."""

    rows = verify_emulated(package, arch, write=True)
    emulated = next((r.parity.host.emulated for r in rows if r.parity.host), "")
    table = Table(title=f"verification under emulation: {emulated or arch}")
    for col in ("artifact", "parity", "mode", "runtime", "max abs err", "reason"):
        table.add_column(col)
    bad = False
    for r in rows:
        rec = r.parity
        bad = bad or rec.status in ("failed", "error")
        worst = max((o.max_abs_err for o in rec.outputs.values() if not o.error), default=None)
        why = rec.reason or "; ".join(f for o in rec.outputs.values() for f in o.failures)
        table.add_row(
            r.id,
            rec.status,
            rec.mode,
            rec.emulation.runtime if rec.emulation else "-",
            f"{worst:.3g}" if worst is not None else "-",
            why,
        )
    out_console.print(table)
    return bad


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "--input",
    "input_path",
    type=click.Path(path_type=Path),
    help=".npz with one array per input (default: the package's first reference sample)",
)
@click.option("--order", help="comma-separated artifact ids to try first")
@click.option("--allow-unverified", is_flag=True)
@click.option("--save", type=click.Path(path_type=Path), help="write the outputs to this .npz")
def run(
    package: Path,
    input_path: Path | None,
    order: str | None,
    allow_unverified: bool,
    save: Path | None,
) -> None:
    """Load PACKAGE as serving would, print what was picked and the outputs."""

    with load(
        package, order=order.split(",") if order else None, allow_unverified=allow_unverified
    ) as session:
        console.print(session.explain(), highlight=False, markup=False)
        if input_path is None:
            feeds = read_feeds_npz(package / "reference" / "inputs.npz")[0]
        else:
            feeds = read_npz(input_path)
        outputs = session.run(feeds)
    summary = {}
    for name, arr in outputs.items():
        a = np.asarray(arr)
        info: dict[str, Any] = {"shape": list(a.shape), "dtype": str(a.dtype)}
        if a.dtype.kind == "f" and a.size:
            info |= {"min": float(a.min()), "max": float(a.max()), "mean": float(a.mean())}
            if a.ndim >= 2:
                info["argmax_last_axis"] = a.reshape(-1, a.shape[-1]).argmax(axis=1)[:16].tolist()
        summary[name] = info
    out_console.print_json(json.dumps({"artifact": session.artifact, "outputs": summary}))
    if save:
        write_npz(save, {k: np.asarray(v) for k, v in outputs.items()})


@cli.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="archive path (default PACKAGE.tar.gz)"
)
def pack(package: Path, output: Path | None) -> None:
    """Write a reproducible .tar.gz of PACKAGE (sorted entries, fixed mtimes and owners)."""

    archive = pack_(package, output or package.with_name(package.name + ".tar.gz"))
    console.print(f"wrote {archive}")


@cli.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
def compare(a: Path, b: Path) -> None:
    """Parity and latency of two packages side by side."""

    out_console.print(compare_packages(a, b))
