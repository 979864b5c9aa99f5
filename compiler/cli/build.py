"""`compile-pkg [build] MODEL`: the main job, its progress on stderr and its result on stdout."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Literal

import click
from pydantic import ValidationError

from compiler.build import BuildOutcome, build_package
from compiler.cli.app import (
    JsonDoc,
    charts_home,
    cli,
    console,
    detail,
    echo_result,
    emit_json,
    json_doc,
    output_options,
    parse_targets,
    say,
    ui,
    warn,
)
from compiler.cli.capture import third_party_output
from compiler.cli.gate import GateVerdict, gate_artifacts, strict_failures
from compiler.cli.tables import print_artifacts
from compiler.core.errors import CompilePkgError, ConfigError
from compiler.core.host import probe_host
from compiler.core.records import GENERATED_DATA, DataOutput, NodeResult
from compiler.packaging.rows import ArtifactRow, artifact_rows
from compiler.pipeline.config import EXECUTOR_KINDS, BuildConfig, load_config
from compiler.pipeline.data import generated_data_notice
from compiler.pipeline.graph import build_graph, describe_graph
from compiler.pipeline.normalize import Source, parse_input_spec
from compiler.serving.manifest import Manifest
from compiler.serving.selection import REFERENCE

__all__ = ["BuildDoc", "build"]

_STYLE = {"ran": "green", "cached": "cyan", "failed": "red", "skipped": "yellow"}


@json_doc
class BuildDoc(JsonDoc):
    """`compile-pkg build --json`: the package written, each artifact, and the strict gate."""

    command: Literal["build"] = "build"
    ok: bool
    exit_code: int
    package: str
    core_sha256: str
    nodes: dict[str, int]
    artifacts: list[ArtifactRow]
    gate: list[GateVerdict]
    strict: bool
    allow_unavailable: bool
    strict_failures: list[GateVerdict]
    warnings: list[str]


class _Progress:
    """One line per finished node on stderr (`[i/n] status node time reason`), also written
    to the --log file; the spinner (on a terminal) names the node running."""

    def __init__(self, total: int, heads: frozenset[str], log: Path | None) -> None:
        self.total = total
        self.heads = heads  # a failed head node stops the build: its error is the one line
        self.done = 0
        self.counts: dict[str, int] = {}
        self.log = log.open("a", encoding="utf-8", buffering=1) if log else None
        self.status = console.status("building...", spinner="dots") if ui.level >= 0 else None

    def __call__(self, nid: str, res: NodeResult | None) -> None:
        if res is None:
            if self.status is not None:
                self.status.update(f"[{self.done + 1}/{self.total}] {nid}")
            return
        self.done += 1
        self.counts[res.status] = self.counts.get(res.status, 0) + 1
        reason = f"  {res.reason}" if res.reason else ""
        line = f"[{self.done}/{self.total}] {res.status:>7} {nid} {res.seconds:.2f}s{reason}"
        if self.log:
            self.log.write(line + "\n" + (res.traceback if res.status == "failed" else ""))
        if res.ok or nid not in self.heads:
            say(line, _STYLE[res.status])
        if res.install:
            detail(f"    to get it: {res.install}")
        if res.traceback:
            detail(res.traceback)

    def close(self) -> None:
        if self.log:
            self.log.close()


def _source(model: str, input_spec: tuple[str, ...]) -> Source:
    if model.endswith(".onnx") or Path(model).exists() or ":" not in model:
        return Source(onnx_path=Path(model))
    return Source(torch_factory=model, input_specs=tuple(parse_input_spec(s) for s in input_spec))


def _with_data_loader(config: BuildConfig, loader: str | None) -> BuildConfig:
    """`--data-loader MODULE:FUNCTION` is the config's `data.loader`."""
    if loader is None:
        return config
    try:
        data = type(config.data).model_validate({**config.data.model_dump(), "loader": loader})
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ConfigError(f"--data-loader {loader}: {problems}") from None
    return config.model_copy(update={"data": data})


def _with_executor(config: BuildConfig, kind: str | None, jobs: int | None) -> BuildConfig:
    """`--executor` and `--jobs` are the config's `executor.kind` and `executor.workers`."""
    update: dict[str, object] = {"kind": kind} if kind else {}
    if jobs is not None:
        update["workers"] = jobs
    executor = config.executor.model_copy(update=update)
    if jobs is not None and executor.kind != "processes":
        raise ConfigError(
            f"--jobs {jobs}: only the processes executor runs nodes at once; "
            "add --executor processes (or executor.kind: processes in the config)"
        )
    return config.model_copy(update={"executor": executor})


def _data_warning(outcome: BuildOutcome, data_node: str) -> str:
    """One loud line when lossy artifacts were calibrated or judged on generated data (the
    data step's notice, naming the flags that fix it), with the artifacts it left without a
    verdict (lossy against the reference: a quantized source's int8 artifacts are not)."""
    m = outcome.manifest
    lossy = [
        a.id
        for a in m.artifacts
        if (got := m.measurements.get(a.id)) is not None
        and got.parity
        and got.parity[-1].reason.startswith(GENERATED_DATA)
    ]
    data = outcome.results[data_node].output
    notice = generated_data_notice(data) if lossy and isinstance(data, DataOutput) else None
    return f"{notice} (lossy artifacts: {', '.join(lossy)})" if notice else ""


# A lossy pick whose task check leaves more than this share of inputs possibly worse (95 %
# bound, `worse_bound`) gets a line saying so: none worse on 8 samples bounds it at 31 %, and
# basic_pitch's ov-int8, none worse on its 8, was worse on 5 of 40 (2026-12-02, an AMX host).
WIDE_TASK_BOUND = 0.2


def _would_serve(m: Manifest, rows: list[ArtifactRow]) -> str:
    """What `load()` on this host would pick first, and why (the build's recorded selection);
    for a lossy pick on few labelled samples, what its task check leaves open."""
    if not m.selection.order:
        return "this host would serve nothing: no artifact passed, and no reference model"
    first, *rest = m.selection.order
    line = f"this host would serve {first.id}: {first.why}"
    if first.id == REFERENCE and rest:  # say why the best artifact is not served
        after = [p for p in rest[0].why.split("; ") if p.startswith("after the reference")]
        line += f"; {rest[0].id} comes {after[0]}" if after else ""
    row = next((r for r in rows if r.id == first.id and r.precision != "fp32"), None)
    bound = row.task_worse_bound if row is not None else None
    if row is not None and row.task is not None and bound is not None and bound > WIDE_TASK_BOUND:
        line += (
            f"; its task check found {len(row.task.worse or ())} of {row.task.samples} labelled "
            f"samples worse, which leaves up to {bound:.0%} of inputs like them worse (95 %): "
            "more labelled samples (--sample-data) narrow it"
        )
    return line


def _report(
    outcome: BuildOutcome,
    data_node: str,
    strict: bool,
    allow_unavailable: bool,
    counts: dict[str, int],
) -> None:
    m = outcome.manifest
    rows = artifact_rows(m)
    verdicts = gate_artifacts(m, probe_host())
    failing = strict_failures(verdicts, allow_unavailable) if strict else []
    warnings = [w for w in (_data_warning(outcome, data_node),) if w]
    for w in warnings:
        warn(w)
    say(f"nodes: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}")
    for v in failing:
        console.print(f"strict: {v.artifact} {v.outcome}: {v.reason}", style="red")
    error = None
    if failing:
        hint = any(v.outcome == "unavailable" for v in failing)
        error = CompilePkgError(
            f"--strict: {len(failing)} of {len(verdicts)} artifacts are not built and passed: "
            + ", ".join(v.artifact for v in failing)
            + (" (--allow-unavailable accepts those this host lacks hardware for)" if hint else "")
        )
    if ui.json:
        emit_json(
            BuildDoc(
                ok=error is None,
                exit_code=error.exit_code if error else 0,
                package=str(outcome.package),
                core_sha256=m.core_sha256,
                nodes=counts,
                artifacts=rows,
                gate=verdicts,
                strict=strict,
                allow_unavailable=allow_unavailable,
                strict_failures=failing,
                warnings=warnings,
            )
        )
    else:
        print_artifacts(rows)
    say(_would_serve(m, rows))
    say(f"package written to {outcome.package}")
    if error is not None:
        if ui.json:  # the document above already says so: no second one
            console.print(f"error: {error}", style="bold red")
            raise SystemExit(error.exit_code)
        raise error


@cli.command()
@click.argument("model")
@click.option(
    "--targets",
    "targets_",
    default=None,
    help="comma-separated: gpu,cpu,arm  [default: the config file's targets, else all three]",
)
@click.option("-o", "--output", type=click.Path(path_type=Path), help="package folder to write")
@click.option(
    "--overwrite", is_flag=True, help="replace an existing folder that is not a compile-pkg package"
)
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
    "--data-loader",
    metavar="MODULE:FUNCTION",
    help="a function returning sample feeds (the config's data.loader)",
)
@click.option(
    "--input-spec",
    multiple=True,
    help="for torch sources: NAME:DTYPE:[dims], e.g. x:float32:[batch,3,224,224]",
)
@click.option(
    "--cache-dir",
    help="node cache: a folder (default $COMPILE_PKG_CACHE, else ~/.cache/compile-pkg), which "
    "also holds the backends' own caches (TVM tuning databases, TensorRT timing caches), or an "
    "fsspec URL shared by a cluster (s3://bucket/prefix; pip install 'compile-pkg[cluster]')",
)
@click.option("--no-cache", is_flag=True, help="neither read nor write the node cache")
@click.option(
    "--strict",
    is_flag=True,
    help="exit 1 unless every artifact is built and its parity passed",
)
@click.option(
    "--allow-unavailable",
    is_flag=True,
    help="with --strict: accept artifacts skipped, deferred or not verified because this host "
    "lacks their hardware or runtime (e.g. gpu on a CPU-only host)",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="append every node line and third-party output (progress bars, library logs) here",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(EXECUTOR_KINDS),
    help="where nodes run: each in a worker process, or all in this one [default: the "
    "config's executor.kind]",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="nodes run at once by the processes executor [default: the cores this process may use]",
)
@click.option("--print-dag", is_flag=True, help="print the pass DAG and exit")
@output_options()
def build(
    model: str,
    targets_: str | None,
    output: Path | None,
    overwrite: bool,
    config_path: Path | None,
    overrides: tuple[str, ...],
    calibration_data: Path | None,
    sample_data: Path | None,
    data_loader: str | None,
    input_spec: tuple[str, ...],
    cache_dir: str | None,
    no_cache: bool,
    strict: bool,
    allow_unavailable: bool,
    log_path: Path | None,
    executor_kind: str | None,
    jobs: int | None,
    print_dag: bool,
) -> None:
    """Build a package from MODEL (an .onnx file or package.module:factory for PyTorch)."""

    config = load_config(config_path, parse_targets(targets_), list(overrides))
    config = _with_data_loader(config, data_loader)
    config = _with_executor(config, executor_kind, jobs)
    targets = tuple(config.targets)
    graph = build_graph(config, targets)
    if print_dag:
        echo_result("".join(f"{line}\n" for line in describe_graph(graph)))
        return
    if output is None:
        raise click.UsageError("give the package folder with -o/--output")
    heads = frozenset((graph.normalize.id, graph.data.id, graph.reference.id))
    progress = _Progress(len(graph), heads, log_path)
    # with no cache, matplotlib's font cache goes to this process's temporary folder (removed
    # when it ends, core/files.py process_scratch): a `--no-cache` build writes its package only
    charts_home(tempfile.mkdtemp(prefix="charts-") if no_cache else cache_dir)
    try:
        with (
            third_party_output(log_path, to_stderr=ui.level >= 1 and not log_path) as captured,
            progress.status or contextlib.nullcontext(),
        ):
            outcome = build_package(
                _source(model, input_spec),
                config,
                targets,
                output,
                cache_dir=cache_dir,
                use_cache=not no_cache,
                sample_data=sample_data,
                calibration_data=calibration_data,
                on_event=progress,
                overwrite=overwrite,
                config_path=config_path,
            )
    finally:
        progress.close()
    if captured.path is None and captured.lines:
        say(f"({captured.lines} lines of third-party output hidden: -v or --log FILE shows them)")
    _report(outcome, graph.data.id, strict, allow_unavailable, progress.counts)
