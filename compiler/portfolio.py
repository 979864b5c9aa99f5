"""Portfolios: many models in one run, one package per model (`compile-pkg build-many`).

A portfolio file (YAML) lists the models, each with its own config, targets, data and package
name; paths are relative to the file. Every entry is checked before any build starts (the
model, its config, its data, its output folder), each problem one line naming the entry.

How the builds run: on the `ray` executor, several builds at once in this process, one thread
per build, each with its own `RayExecutor` on the one connection to the cluster, so every
node of every model is a Ray task and the cluster runs the models' DAGs side by side (a Ray
task per whole model would leave a build's own nodes, and its resource labels, to one
machine, and lose the whole build with its worker). The cache stays the only exchange: each
build's driver keys and commits its nodes there. On `processes` and `in-process` the models
build one after another: each build's pool already fills this host's cores, and builds side by
side would time their latency beside each other's compiles.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.build import build_package, check_data_paths
from compiler.core.errors import CompilePkgError, ConfigError, short_message
from compiler.core.records import NodeResult
from compiler.packaging.output import check_output
from compiler.packaging.rows import artifact_rows
from compiler.pipeline.config import BuildConfig, ExecutorConfig, load_config
from compiler.pipeline.executors.base import Executor
from compiler.pipeline.executors.ray_executor import RayExecutor, connect, disconnect
from compiler.pipeline.executors.registry import make_executor as registry_executor
from compiler.pipeline.graph import build_graph
from compiler.pipeline.normalize import Source
from compiler.pipeline.preflight import preflight_source
from compiler.serving.manifest import Manifest
from compiler.serving.selection import REFERENCE

__all__ = [
    "ModelSummary",
    "Pick",
    "PlannedModel",
    "Portfolio",
    "PortfolioEntry",
    "PortfolioFile",
    "build_portfolio",
    "executor_from_flag",
    "load_portfolio",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PortfolioEntry(_Strict):
    """One model of a portfolio file."""

    model: str = Field(description="the .onnx model, relative to the portfolio file")
    name: str = Field(default="", description="its package folder under OUTDIR; default: stem")
    config: str = Field(default="", description="its YAML or TOML build config")
    targets: list[str] | None = Field(default=None, description="default: the config's")
    sample_data: str = ""
    calibration_data: str = ""
    data_loader: str = Field(default="", description="MODULE:FUNCTION, the config's data.loader")
    set: list[str] = Field(default_factory=list, description="--set KEY=VALUE overrides")


class PortfolioFile(_Strict):
    schema_version: Literal[1] = 1
    executor: ExecutorConfig | None = Field(
        default=None, description="where every model's nodes run (replaces each config's)"
    )
    models: list[PortfolioEntry] = Field(min_length=1)


@dataclass(frozen=True)
class PlannedModel:
    """An entry checked and resolved: what `build_package` is given."""

    name: str
    model: Path
    config: BuildConfig
    targets: tuple[str, ...]
    out: Path
    config_path: Path | None
    sample_data: Path | None
    calibration_data: Path | None


@dataclass(frozen=True)
class Portfolio:
    path: Path
    executor: ExecutorConfig
    models: list[PlannedModel]


class Pick(_Strict):
    """What the build host would serve for one target, and its measured speedup."""

    target: str
    artifact: str = ""  # "" when no artifact of the target can be served
    why: str = ""
    speedup: float | None = None
    speedup_low: float | None = None
    speedup_high: float | None = None
    speedup_text: str = "-"


class ModelSummary(_Strict):
    """One model's line of the summary: its package or why it has none."""

    name: str
    model: str
    status: Literal["built", "failed"]
    reason: str = ""
    package: str = ""
    core_sha256: str = ""
    nodes: dict[str, int] = Field(default_factory=dict)
    failed_nodes: list[str] = Field(default_factory=list)
    picks: list[Pick] = Field(default_factory=list)


def executor_from_flag(flag: str, base: ExecutorConfig) -> ExecutorConfig:
    """`--executor in-process|processes|ray|ray://HOST:PORT` over the portfolio's executor."""
    if flag.startswith("ray://"):
        return base.model_copy(update={"kind": "ray", "address": flag})
    if flag not in ("in-process", "processes", "ray"):
        raise ConfigError(
            f"--executor {flag}: choose in-process, processes, ray or ray://HOST:PORT"
        )
    return base.model_copy(update={"kind": flag})


def _read(path: Path) -> PortfolioFile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the portfolio ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {short_message(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a portfolio is a mapping with a `models:` list")
    try:
        return PortfolioFile.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = e["loc"]
            where = ".".join(str(p) for p in loc)
            if loc[:1] == ("models",) and len(loc) > 1 and isinstance(loc[1], int):
                entry = raw["models"][loc[1]]
                named = entry.get("name") or entry.get("model") if isinstance(entry, dict) else ""
                where = f"models[{loc[1]}]" + (f" ({named})" if named else "")
                where += "".join(f".{p}" for p in loc[2:])
            problems.append(f"{where}: {e['msg']}")
        raise ConfigError(f"{path}: " + "; ".join(problems)) from None


def _config(entry: PortfolioEntry, base: Path) -> tuple[BuildConfig, Path | None]:
    config_path = base / entry.config if entry.config else None
    config = load_config(config_path, entry.targets, entry.set)
    if entry.data_loader:
        data = {**config.data.model_dump(), "loader": entry.data_loader}
        try:
            loader = type(config.data).model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors())
            raise ConfigError(f"data_loader {entry.data_loader}: {problems}") from None
        config = config.model_copy(update={"data": loader})
    return config, config_path


def _plan(entry: PortfolioEntry, path: Path, outdir: Path, cache_dir: Path | None) -> PlannedModel:
    base = path.parent
    model = base / entry.model
    if model.suffix != ".onnx":
        raise ConfigError(f"model {entry.model}: give an .onnx file")
    if not model.is_file():
        raise ConfigError(f"model {model}: no such file")
    name = entry.name or model.stem
    if not _NAME.fullmatch(name):
        raise ConfigError(f"name {name!r}: a package folder name (letters, digits, . _ -)")
    config, config_path = _config(entry, base)
    sample = base / entry.sample_data if entry.sample_data else None
    calibration = base / entry.calibration_data if entry.calibration_data else None
    check_data_paths(sample_data=sample, calibration_data=calibration)
    preflight_source(Source(onnx_path=model))
    targets = tuple(config.targets)
    build_graph(config, targets)
    given = [p for p in (model, sample, calibration, config_path, cache_dir, path) if p]
    out = outdir / name
    check_output(out, inputs=given)
    return PlannedModel(name, model, config, targets, out, config_path, sample, calibration)


def load_portfolio(
    path: Path, outdir: Path, *, executor: str | None = None, cache_dir: Path | None = None
) -> Portfolio:
    """Read and check the portfolio at `path` (every entry, before any work); ConfigError
    with one line per entry at fault. `executor` is the --executor flag."""
    doc = _read(path)
    plans: list[PlannedModel] = []
    problems: list[str] = []
    seen: dict[str, int] = {}  # package name -> the first entry that has it
    for i, entry in enumerate(doc.models):
        label = f"{path}: models[{i}] ({entry.name or entry.model})"
        try:
            plan = _plan(entry, path, outdir, cache_dir)
        except CompilePkgError as exc:  # one line per entry (a config's error lists keys)
            first, *rest = [line.strip() for line in str(exc).splitlines() if line.strip()]
            problems.append(f"{label}: {' '.join([first, '; '.join(rest)]).strip()}")
            continue
        if plan.name in seen:
            problems.append(
                f"{label}: the package name is also models[{seen[plan.name]}]'s; give each "
                "a distinct `name:`"
            )
        seen.setdefault(plan.name, i)
        plans.append(plan)
    if problems:
        raise ConfigError("\n".join(problems))
    config = doc.executor or (plans[0].config.executor if plans else ExecutorConfig())
    if executor:
        config = executor_from_flag(executor, config)
    return Portfolio(path, config, plans)


def _picks(m: Manifest) -> list[Pick]:
    """Per target, the artifact the build host would serve first, with its speedup; the
    reference where it comes ahead of every artifact of the target (none of them was
    measured faster than it: serving/selection.py)."""
    rows = {r.id: r for r in artifact_rows(m)}
    picks: dict[str, Pick] = {}
    order = m.selection.order
    for i, choice in enumerate(order):
        if choice.id == REFERENCE:
            after = [rows[c.id].target for c in order[i + 1 :] if c.id in rows]
            for t in dict.fromkeys(t for t in after if t not in picks):
                picks[t] = Pick(
                    target=t,
                    artifact=REFERENCE,
                    why=f"no {t} artifact was measured faster than the reference: {choice.why}",
                    speedup=1.0,
                    speedup_low=1.0,
                    speedup_high=1.0,
                    speedup_text="1.00x (itself)",
                )
            continue
        r = rows.get(choice.id)
        if r is None or r.target in picks:
            continue
        picks[r.target] = Pick(
            target=r.target,
            artifact=r.id,
            why=choice.why,
            speedup=r.speedup,
            speedup_low=r.speedup_low,
            speedup_high=r.speedup_high,
            speedup_text=r.speedup_text,
        )
    targets = dict.fromkeys(a.target for a in m.artifacts)
    return [picks.get(t) or Pick(target=t, why="no artifact of it can be served") for t in targets]


Events = Callable[[str, str, NodeResult | None], None]  # (model name, node id, result)


def _build_one(
    plan: PlannedModel,
    executor: Executor,
    cache_dir: Path | None,
    use_cache: bool,
    on_event: Events,
) -> ModelSummary:
    base: dict[str, Any] = {"name": plan.name, "model": str(plan.model)}
    try:
        outcome = build_package(
            Source(onnx_path=plan.model),
            plan.config,
            plan.targets,
            plan.out,
            cache_dir=cache_dir,
            use_cache=use_cache,
            sample_data=plan.sample_data,
            calibration_data=plan.calibration_data,
            on_event=lambda nid, r: on_event(plan.name, nid, r),
            config_path=plan.config_path,
            executor=executor,
        )
    except CompilePkgError as exc:
        return ModelSummary(**base, status="failed", reason=str(exc))
    counts: dict[str, int] = {}
    for r in outcome.results.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    m = outcome.manifest
    return ModelSummary(
        **base,
        status="built",
        package=str(outcome.package),
        core_sha256=m.core_sha256,
        nodes=counts,
        failed_nodes=outcome.failures,
        picks=_picks(m),
    )


def build_portfolio(
    portfolio: Portfolio,
    *,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    on_event: Events = lambda name, nid, r: None,
    make_executor: Callable[[ExecutorConfig], Executor] | None = None,
) -> list[ModelSummary]:
    """Build every model of `portfolio`, in its order; a model that cannot build is a failed
    summary, and the others go on. `make_executor` makes each build's executor (default: the
    portfolio's)."""
    config = portfolio.executor
    make = make_executor or registry_executor
    if config.kind != "ray":
        return [
            _build_one(p, make(config), cache_dir, use_cache, on_event) for p in portfolio.models
        ]
    # once, before the threads (its error is one line), and ended after them
    connected = connect(config.address, config.workers)
    try:
        at_once = max(1, min(len(portfolio.models), RayExecutor(config).slots))
        with ThreadPoolExecutor(at_once, thread_name_prefix="compile-pkg build") as pool:
            futures = [
                pool.submit(_build_one, p, make(config), cache_dir, use_cache, on_event)
                for p in portfolio.models
            ]
            return [f.result() for f in futures]
    finally:
        if connected:
            disconnect()
