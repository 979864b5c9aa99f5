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
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python perf/run.py` puts perf/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from perf.builds import BuildRun, cli_build, run_olive  # noqa: E402
from perf.datasets import ModelData, load_data, write_feeds  # noqa: E402
from perf.models import MODELS, BenchModel, model_path  # noqa: E402
from perf.plan import Plan, dropped_variants, library_versions, pick_one_change  # noqa: E402

__all__ = ["main"]


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


def _measure(
    model: BenchModel,
    data: ModelData,
    plan: Plan,
    work: Path,
    peak: dict[str, Any],
    olive_jobs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    from compiler.core.host import probe_host
    from compiler.measure.timing import batch_size
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
    one_change = pick_one_change(plan.targets.split(","))
    dropped = dropped_variants(plan)
    doc: dict[str, Any] = {
        "schema": 1,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python perf/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": plan.quick,
        "host": host.model_dump(),
        "libraries": library_versions(),
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
    olive = run_olive(olive_jobs, work, timeout_s=300 + 240 * len(olive_jobs))
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
