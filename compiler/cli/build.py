"""`compile-pkg [build] MODEL`: the main job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from compiler.build import build_package
from compiler.cli.app import cli, console, out_console, parse_targets, print_artifacts
from compiler.core.errors import CompilePkgError
from compiler.pipeline.config import load_config
from compiler.pipeline.graph import build_graph, describe_graph
from compiler.pipeline.normalize import Source, parse_input_spec

__all__ = ["build"]


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

    targets = parse_targets(targets_)
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
    print_artifacts(outcome.manifest)
    console.print(f"package written to {output}")
    if strict and any(a.status == "failed" for a in outcome.manifest.artifacts):
        raise CompilePkgError(
            "--strict: some artifacts failed: "
            + ", ".join(a.id for a in outcome.manifest.artifacts if a.status == "failed")
        )
