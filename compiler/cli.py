"""The `compile-pkg` command line.

`compile-pkg MODEL --targets gpu,cpu,arm -o OUT` builds (the `build` subcommand is implied);
`inspect`, `verify`, `run`, `pack` and `compare` work on packages. Exit codes: 0 success;
1 a build or run failed; 2 bad input or config; 3 bad package; 4 nothing loadable here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from compiler.build import build_package
from compiler.core.errors import CompilePkgError, ConfigError
from compiler.core.feeds import read_feeds_npz, read_npz, write_npz
from compiler.core.targets import check_targets
from compiler.packaging.compare import compare_packages
from compiler.packaging.emulated import verify_emulated
from compiler.packaging.report import artifact_rows
from compiler.packaging.reverify import verify_package
from compiler.packaging.write import pack as pack_
from compiler.pipeline.config import load_config
from compiler.pipeline.graph import build_graph, describe_graph
from compiler.pipeline.normalize import Source, parse_input_spec
from compiler.serving.loader import load
from compiler.serving.manifest import read_manifest

__all__ = ["main"]

console = Console(stderr=True)
# tables stay readable when piped (rich would fall back to 80 columns)
out_console = Console(width=None if sys.stdout.isatty() else 160)

_COMMANDS = {"build", "inspect", "verify", "run", "pack", "compare"}


class _DefaultBuild(click.Group):
    """Treat `compile-pkg MODEL ...` as `compile-pkg build MODEL ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in _COMMANDS and args[0] not in ("--help", "-h", "--version"):
            args = ["build", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultBuild, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compile-pkg")
def cli() -> None:
    """Compile one model into one deployment package for gpu, cpu and arm targets."""


def _targets(value: str) -> tuple[str, ...]:
    """The --targets list, checked by the one target table (compiler.core.targets)."""

    try:
        return check_targets(value.split(","))
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.argument("model")
@click.option(
    "--targets",
    "targets_",
    default="gpu,cpu,arm",
    show_default=True,
    help="comma-separated: gpu,cpu,arm",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="package folder to write")
@click.option(
    "--config", "config_path", type=click.Path(path_type=Path), help="YAML or TOML config"
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a config value, e.g. cpu.fuse.level=extended",
)
@click.option(
    "--calibration-data", type=click.Path(path_type=Path), help=".npz file or folder of .npz"
)
@click.option(
    "--sample-data", type=click.Path(path_type=Path), help="inputs for parity (.npz file or folder)"
)
@click.option(
    "--input-spec",
    multiple=True,
    help="for torch sources: NAME:DTYPE:[dims], e.g. x:float32:[batch,3,224,224]",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="node cache (default ~/.cache/compile-pkg or $COMPILE_PKG_CACHE)",
)
@click.option("--no-cache", is_flag=True, help="neither read nor write the node cache")
@click.option("--strict", is_flag=True, help="exit non-zero if any artifact failed")
@click.option("--print-dag", is_flag=True, help="print the pass DAG and exit")
def build(
    model: str,
    targets_: str,
    output: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
    calibration_data: Path | None,
    sample_data: Path | None,
    input_spec: tuple[str, ...],
    cache_dir: Path | None,
    no_cache: bool,
    strict: bool,
    print_dag: bool,
) -> None:
    """Build a package from MODEL (an .onnx file or package.module:factory for PyTorch)."""

    targets = _targets(targets_)
    config = load_config(config_path, list(targets), list(overrides))
    if print_dag:
        for line in describe_graph(build_graph(config, targets)):
            out_console.print(line, markup=False, highlight=False)
        return
    if output is None:
        raise click.UsageError("give the package folder with -o/--output")
    if model.endswith(".onnx") or Path(model).exists() or ":" not in model:
        source = Source(onnx_path=Path(model))
    else:
        source = Source(
            torch_factory=model, input_specs=tuple(parse_input_spec(s) for s in input_spec)
        )

    def on_event(nid: str, res: Any) -> None:
        if res is None:
            return
        style = {"ran": "green", "cached": "cyan", "failed": "red", "skipped": "yellow"}[res.status]
        reason = f"  {res.reason}" if res.reason else ""
        console.print(
            f"[{style}]{res.status:>7}[/] {nid} [dim]{res.seconds:.2f}s[/]{reason}", highlight=False
        )

    with console.status("building...", spinner="dots"):
        outcome = build_package(
            source,
            config,
            targets,
            output,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            sample_data=sample_data,
            calibration_data=calibration_data,
            on_event=on_event,
        )
    counts: dict[str, int] = {}
    for r in outcome.results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    console.print(f"nodes: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}")
    _print_artifacts(outcome.manifest)
    console.print(f"package written to {output}")
    if strict and any(a.status == "failed" for a in outcome.manifest.artifacts):
        raise CompilePkgError(
            "--strict: some artifacts failed: "
            + ", ".join(a.id for a in outcome.manifest.artifacts if a.status == "failed")
        )


def _print_artifacts(manifest: Any) -> None:

    table = Table(title="artifacts")
    for col in (
        "artifact",
        "backend",
        "precision",
        "status",
        "parity",
        "max abs err",
        "p50 ms",
        "speedup",
    ):
        table.add_column(col)
    for r in artifact_rows(manifest):
        status = r.status + (f": {r.reason[:70]}" if r.reason else "")
        table.add_row(
            r.id,
            r.backend,
            r.precision,
            status,
            r.parity,
            f"{r.max_abs_err:.2e}" if r.max_abs_err is not None else "-",
            f"{r.p50_ms:.3f}" if r.p50_ms is not None else "-",
            f"{r.speedup:.2f}x" if r.speedup is not None else "-",
        )
    out_console.print(table)


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
    _print_artifacts(m)
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


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="compile-pkg", standalone_mode=False)
    except CompilePkgError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug of ours: one line by default, the traceback on request
        if os.environ.get("COMPILE_PKG_DEBUG"):
            raise
        console.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} "
            "(set COMPILE_PKG_DEBUG=1 for the traceback, and please report it)",
            highlight=False,
        )
        sys.exit(70)


if __name__ == "__main__":
    main()
