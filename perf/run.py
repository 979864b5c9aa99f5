"""The benchmark suite: what a compile-pkg package buys over the baseline, side by side.

    python perf/run.py [--quick] [--models resnet18,magika] [--no-olive]

Per model: three builds through the CLI (cold, warm, one quantization parameter changed),
Olive's closest workflows on the same model and calibration data, then, in one process,
every artifact that runs on this host interleaved with the ONNX Runtime fp32 reference,
repeated, with parity, task accuracy and the fraction of the machine's measured peak.
Writes perf/results/<date>-<host>[-quick].json (every raw sample), .md (the table, also
printed) and .png (latency plot). Set-up: perf/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python perf/run.py` puts perf/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from perf.builds import BuildRun, cli_build  # noqa: E402
from perf.datasets import ModelData, load_data, write_feeds  # noqa: E402
from perf.models import MODELS, BenchModel, model_path  # noqa: E402

__all__ = ["Plan", "main"]

# The first of these that the resolved config accepts is the "one change" build's override:
# a quantize pass's calibration method (cpu first, where compile-pkg's int8 runs here), else
# NNCF's preset in the OpenVINO int8 variant.
ONE_CHANGE = (
    "cpu.quantize.calibration_method=percentile",
    "gpu.quantize.calibration_method=percentile",
    "cpu.ov-int8.compile.preset=mixed",
)
LIBRARIES = (
    "compile-pkg",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "apache-tvm",
    "torch",
    "numpy",
    "olive-ai",
    "onnxsim",
    "matplotlib",
)


@dataclass(frozen=True)
class Plan:
    """What a run does; --quick trades repeats and data size for time, never coverage."""

    quick: bool
    targets: str = "gpu,cpu,arm"
    samples: int = 8
    calibration: int = 32
    task: int = 48
    repeats: int = 5
    warmup: int = 5
    runs: int = 30
    max_seconds: float = 15.0
    peak_n: int = 2048
    peak_repeats: int = 15
    olive_workflows: tuple[str, ...] = ("ort-int8", "ov-int8")
    build_latency_runs: int = 10  # the build's own latency check; perf measures its own
    drop_backends: tuple[tuple[str, str], ...] = ()  # (target, backend) variants not built
    drop_variants: tuple[tuple[str, str], ...] = ()  # (target, variant) not built
    extra_sets: tuple[str, ...] = ()  # more --set overrides for every build

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            samples=4,
            calibration=8,
            task=16,
            repeats=3,
            warmup=2,
            runs=6,
            max_seconds=3.0,
            peak_n=1024,
            peak_repeats=8,
            olive_workflows=("ort-int8",),
            build_latency_runs=3,
            drop_backends=(("gpu", "tvm"), ("cpu", "tvm"), ("arm", "tvm")),
            drop_variants=(("gpu", "trt-int8"), ("arm", "ort-int8"), ("arm", "ov-int8")),
            extra_sets=("cpu.quantize.accuracy_aware.enabled=false",),
        )

    def note(self) -> str:
        base = (
            f"Data: {self.samples} parity samples, {self.calibration} calibration feeds, up "
            f"to {self.task} task items per real model."
        )
        if not self.quick:
            return base + " Full run."
        full = Plan(quick=False)
        labels = {
            "repeats": "repeats",
            "runs": "runs per pair",
            "warmup": "warm-up rounds",
            "calibration": "calibration feeds",
            "samples": "parity samples",
            "task": "task items",
            "peak_n": "peak matrix size",
            "peak_repeats": "peak runs",
            "build_latency_runs": "the builds' own latency runs",
        }
        changed = [
            f"{text} {getattr(full, k)}->{getattr(self, k)}"
            for k, text in labels.items()
            if getattr(full, k) != getattr(self, k)
        ]
        dropped_wf = sorted(set(full.olive_workflows) - set(self.olive_workflows))
        if dropped_wf:
            changed.append(f"Olive's {', '.join(dropped_wf)} workflow")
        for target, backend in self.drop_backends[:1]:
            changed.append(
                f"the {target} target's {backend} variants from every build (CUDA code "
                "generation took 190-310 s per variant and model on the 2-core host, "
                "and a host without a GPU cannot run them)"
            )
        if any(t == "cpu" and b == "tvm" for t, b in self.drop_backends):
            changed.append(
                "the cpu and arm targets' tvm variants (untuned TVM builds took 60-250 s per "
                "model and ran 10-100x slower than the reference in the full run)"
            )
        for target, variant in self.drop_variants:
            changed.append(f"{target}/{variant}")
        for item in self.extra_sets:
            changed.append(f"--set {item} (the accuracy-aware int8 loop took 150 s on bert)")
        return base + (
            " --quick, against the full run: "
            + "; ".join(changed)
            + ". Every model and every build kind is still run."
        )


def _library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _one_change(targets: list[str]) -> str:
    from compiler.core.errors import ConfigError
    from compiler.pipeline.config import resolve_config

    for cand in ONE_CHANGE:
        try:
            resolve_config({}, targets, [cand])
            return cand
        except ConfigError:
            continue
    raise SystemExit(f"none of {ONE_CHANGE} applies to the default pipelines of {targets}")


def _dropped_variants(plan: Plan) -> tuple[str, ...]:
    """`--set T.V.enabled=false` for the variants --quick leaves out of every build."""
    from compiler.pipeline.config import resolve_config

    targets = plan.targets.split(",")
    cfg = resolve_config({}, targets)
    out = []
    for target, backend in plan.drop_backends:
        variants = cfg.targets[target].variants or {} if target in cfg.targets else {}
        out += [
            f"{target}.{name}.enabled=false"
            for name, v in sorted(variants.items())
            if v.compile.backend == backend
        ]
    for target, variant in plan.drop_variants:
        if target in cfg.targets and variant in (cfg.targets[target].variants or {}):
            out.append(f"{target}.{variant}.enabled=false")
    return tuple(out) + plan.extra_sets


def _rel(p: Path) -> Path:
    try:
        return p.resolve().relative_to(Path.cwd())
    except ValueError:
        return p


def _log(msg: str) -> None:
    print(f"[perf {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- phases


def _prepare(model: BenchModel, plan: Plan, work: Path) -> tuple[Path, ModelData, Path]:
    src = model_path(model, work / "models")
    data = load_data(
        model, {"samples": plan.samples, "calibration": plan.calibration, "task": plan.task}
    )
    mdir = work / model.name
    for sub in ("samples", "calibration"):
        shutil.rmtree(mdir / sub, ignore_errors=True)
    write_feeds(data.samples, mdir / "samples")
    write_feeds(data.calibration, mdir / "calibration")
    config = {
        "package": {"name": model.name, "description": model.description},
        # perf measures latency itself; the build's own check stays short
        "latency": {
            "warmup": 1 if plan.quick else 2,
            "runs": plan.build_latency_runs,
            "max_seconds": 3.0,
        },
        **model.config,
    }
    cfg_path = mdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=True), encoding="utf-8")
    return src, data, cfg_path


def _builds(
    model: BenchModel,
    src: Path,
    cfg: Path,
    plan: Plan,
    one_change: str,
    dropped: tuple[str, ...],
    work: Path,
) -> dict[str, BuildRun]:
    mdir = work / model.name
    cache = mdir / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold means an empty cache
    runs: dict[str, BuildRun] = {}
    for label, change in (("cold", ()), ("warm", ()), ("one-change", (one_change,))):
        overrides = (*dropped, *change)
        out = mdir / f"pkg-{label}"
        shutil.rmtree(out, ignore_errors=True)
        # absolute paths: backends run workers in other folders (targets/tvm does)
        run = cli_build(
            label,
            src.resolve(),
            out.resolve(),
            targets=plan.targets,
            config=cfg.resolve(),
            samples=(mdir / "samples").resolve(),
            calibration=(mdir / "calibration").resolve(),
            cache_dir=cache.resolve(),
            overrides=overrides,
            log=mdir / f"build-{label}.log",
        )
        _log(
            f"{model.name}: {label} build {run.seconds:.1f} s, {run.peak_rss_mib:.0f} MiB, "
            f"nodes {run.nodes} (exit {run.returncode})"
        )
        runs[label] = run
    return runs


def _olive(jobs: list[dict[str, Any]], work: Path, timeout_s: float) -> dict[str, Any]:
    """Every Olive job in one child process; {"jobs": [...]} or {"error": why}."""
    if not jobs:
        return {"skipped": "no Olive jobs (--no-olive)", "jobs": []}
    try:
        importlib.metadata.version("olive-ai")
    except importlib.metadata.PackageNotFoundError:
        return {
            "error": "olive-ai is not installed: pip install -r perf/requirements.txt "
            "(see perf/README.md)",
            "jobs": [],
        }
    jobs_path, results_path = work / "olive-jobs.json", work / "olive-results.json"
    jobs_path.write_text(json.dumps(jobs, indent=2), encoding="utf-8")
    results_path.unlink(missing_ok=True)
    env = {**os.environ, "OLIVE_DISABLE_TELEMETRY": "1", "CI": "1"}
    start = time.perf_counter()
    with (work / "olive.log").open("w", encoding="utf-8") as log:
        try:
            proc = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "perf" / "olive_peer.py"),
                    str(jobs_path),
                    str(results_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout_s,
                check=False,
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"killed after {timeout_s:.0f} s"
    doc = json.loads(results_path.read_text()) if results_path.is_file() else {"jobs": []}
    doc["process_seconds"] = round(time.perf_counter() - start, 3)
    doc["returncode"] = rc
    if rc != 0 and len(doc["jobs"]) < len(jobs):
        tail = (work / "olive.log").read_text(errors="replace").splitlines()[-5:]
        doc["error"] = (
            f"Olive process exited {rc} after {len(doc['jobs'])} of {len(jobs)} jobs: "
            + " | ".join(tail)[:600]
        )
    return doc


def _measure(
    model: BenchModel,
    data: ModelData,
    plan: Plan,
    work: Path,
    peak: dict[str, Any],
    olive_jobs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    from compiler.core.host import probe_host
    from compiler.measure.verify import batch_size
    from compiler.serving.manifest import read_manifest
    from perf.flops import count_flops
    from perf.measure import (
        close_all,
        interleaved_repeats,
        olive_contender,
        olive_parity,
        package_contenders,
        package_parity,
        reference_contender,
    )

    pkg = work / model.name / "pkg-cold"
    manifest = read_manifest(pkg)
    feed = manifest.contract.validate_feeds(data.samples[0])
    flops = count_flops(pkg / "reference" / "model.onnx", feed)
    ours, not_measured = package_contenders(pkg, probe_host())
    contenders = [reference_contender(pkg, manifest), *ours]
    for job in olive_jobs.values():
        if job.get("artifact"):
            try:
                contenders.append(olive_contender(job, manifest))
            except Exception as exc:  # noqa: BLE001 - Olive's artifact failing to load is a finding
                job["error"] = f"artifact failed to load: {type(exc).__name__}: {exc}"[:400]
    try:
        batch = batch_size(manifest.contract, feed)
        latency = interleaved_repeats(
            contenders,
            feed,
            repeats=plan.repeats,
            warmup=plan.warmup,
            runs=plan.runs,
            max_seconds=plan.max_seconds,
            batch=batch,
        )
        rows = []
        for c in contenders:
            row: dict[str, Any] = {
                "id": c.id,
                "origin": c.origin,
                "precision": c.precision,
                "runner": c.describe,
                "latency": latency[c.id],
            }
            if c.origin == "compile-pkg":
                row["parity"] = package_parity(manifest, c.id)
            elif c.origin == "olive":
                row["parity"] = olive_parity(c, pkg)
            else:
                row["parity"] = {"status": "reference", "cosine": 1.0}
            key = "int8" if c.precision == "int8" else "fp32"
            p50_s = latency[c.id]["pooled"]["p50_ms"] / 1e3
            row["fraction_of_peak"] = flops.total / p50_s / (peak[key]["gflops"] * 1e9)
            row["peak_used"] = key
            if data.task is not None:
                scored = data.task.score([c.run(f) for f in data.task.feeds])
                row["task"] = {"metric": data.task.metric, **scored}
            rows.append(row)
    finally:
        close_all(contenders)
    return {
        "flops": flops.as_dict(),
        "batch": batch,
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "contenders": rows,
        "not_measured": not_measured,
        "task_set": data.task.description if data.task else None,
    }


# ----------------------------------------------------------------------------- main


def _render(results: Path) -> int:
    """Re-render the table and the plot from a results file (no measuring)."""
    from perf.report import render_markdown, render_plot

    doc = json.loads(results.read_text(encoding="utf-8"))
    plot = results.with_suffix(".png")
    has_plot = render_plot(doc, plot)
    md = render_markdown(doc, plot.name if has_plot else None)
    results.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and data, all models")
    ap.add_argument("--models", default=",".join(MODELS), help=f"subset of {list(MODELS)}")
    ap.add_argument("--no-olive", action="store_true", help="skip the Olive peer")
    ap.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    ap.add_argument("--workdir", type=Path, default=ROOT / "perf" / ".work")
    ap.add_argument(
        "--render",
        type=Path,
        metavar="RESULTS.json",
        help="only re-render the .md and .png beside an earlier results file",
    )
    args = ap.parse_args(argv)
    if args.render:
        return _render(args.render)
    os.chdir(ROOT)
    started = time.perf_counter()
    plan = Plan.make(args.quick)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        ap.error(f"unknown models {unknown}; known: {list(MODELS)}")

    from compiler.core.host import probe_host
    from perf.peak import measure_peak
    from perf.report import render_markdown, render_plot

    host = probe_host()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    one_change = _one_change(plan.targets.split(","))
    dropped = _dropped_variants(plan)
    doc: dict[str, Any] = {
        "schema": 1,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python perf/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": plan.quick,
        "host": host.model_dump(),
        "libraries": _library_versions(),
        "load_average": list(os.getloadavg()),
        "models": {},
        "notes": [],
        "plan": {
            **plan.__dict__,
            "olive_workflows": list(plan.olive_workflows),
            "one_change": one_change,
            "dropped_variants": list(dropped),
            "note": plan.note(),
            "latency_note": f"{plan.repeats} repeats; in each, every contender runs "
            f"{plan.runs} times interleaved with the reference (A B A B, "
            f"after {plan.warmup} warm-up rounds, at most "
            f"{plan.max_seconds:.0f} s per pair) on one parity sample; "
            "p50/p99 pooled over repeats.",
        },
    }
    prepared: dict[str, tuple[Path, ModelData]] = {}
    olive_jobs: list[dict[str, Any]] = []
    for name in names:  # phase 1: builds
        model = MODELS[name]
        entry: dict[str, Any] = {
            "kind": model.kind,
            "description": model.description,
            "weights": model.weights,
            "task_metric": model.task,
        }
        doc["models"][name] = entry
        try:
            src, data, cfg = _prepare(model, plan, work)
        except FileNotFoundError as exc:
            entry["error"] = str(exc)
            _log(f"{name}: skipped: {exc}")
            continue
        entry["source"] = str(_rel(src))
        entry["data_notes"] = data.notes
        entry["builds"] = {
            k: r.as_dict()
            for k, r in _builds(model, src, cfg, plan, one_change, dropped, work).items()
        }
        if entry["builds"]["cold"]["returncode"] != 0:
            entry["error"] = "cold build failed: " + entry["builds"]["cold"]["log_tail"][-400:]
            continue
        prepared[name] = (src, data)
        for wf in () if args.no_olive else plan.olive_workflows:
            olive_jobs.append(
                {
                    "id": f"{name}/{wf}",
                    "model": str(src.resolve()),
                    "workflow": wf,
                    "calibration": str((work / name / "calibration").resolve()),
                    "out": str((work / "olive" / name / wf).resolve()),
                }
            )
    _log(f"Olive: {len(olive_jobs)} jobs in one process")  # phase 2: the peer
    for name in prepared:
        for wf in plan.olive_workflows:
            shutil.rmtree(work / "olive" / name / wf, ignore_errors=True)
    olive = _olive(olive_jobs, work, timeout_s=300 + 240 * len(olive_jobs))
    doc["olive"] = {k: v for k, v in olive.items() if k != "jobs"}
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for job in olive.get("jobs", []):
        by_model.setdefault(job["id"].split("/")[0], {})[job["workflow"]] = job
    for job in olive_jobs:
        name, wf = job["id"].split("/")
        by_model.setdefault(name, {}).setdefault(
            wf, {"workflow": wf, "error": olive.get("error", "not run"), "seconds": 0.0}
        )
    _log("peak: measuring the machine's fp32 and int8 matrix-product rate")  # phase 3
    doc["peak"] = measure_peak(plan.peak_n, plan.peak_repeats)
    for name, (_src, data) in prepared.items():
        _log(f"{name}: measuring")
        olive_for = by_model.get(name, {})
        try:
            doc["models"][name].update(
                _measure(MODELS[name], data, plan, work, doc["peak"], olive_for)
            )
        except Exception as exc:  # noqa: BLE001 - one model's failure must not lose the rest
            doc["models"][name]["error"] = f"measurement failed: {type(exc).__name__}: {exc}"
            _log(f"{name}: {doc['models'][name]['error']}")
        doc["models"][name]["olive"] = olive_for
    doc["load_average_end"] = list(os.getloadavg())
    doc["wall_seconds"] = round(time.perf_counter() - started, 1)
    if args.no_olive:
        doc["notes"].append("Olive was skipped (--no-olive).")
    stem = f"{doc['date']}-{host.hostname or 'host'}{'-quick' if plan.quick else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    plot = args.out / f"{stem}.png"
    has_plot = render_plot(doc, plot)
    if not has_plot:
        doc["notes"].append(
            "no plot: matplotlib is not installed (pip install -r perf/requirements.txt)"
        )
    (args.out / f"{stem}.json").write_text(
        json.dumps(doc, indent=1, sort_keys=True, allow_nan=True) + "\n", encoding="utf-8"
    )
    md = render_markdown(doc, plot.name if has_plot else None)
    (args.out / f"{stem}.md").write_text(md, encoding="utf-8")
    print(md)
    _log(
        f"wrote {_rel(args.out / stem)}.json/.md{'/.png' if has_plot else ''} "
        f"in {doc['wall_seconds']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
