"""The benchmark suite: what a compile-pkg package buys over the baseline, side by side.

    python perf/run.py [--quick] [--models resnet18,magika] [--no-olive]

Per model: three builds through the CLI (cold, warm, one quantization parameter changed),
Olive's closest workflows on the same model and calibration data (a fresh process per
workflow, as `olive run`), then, in one process,
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
from perf.plan import (  # noqa: E402
    Plan,
    dropped_variants,
    library_versions,
    parse_models,
    pick_one_change,
)

__all__ = ["fastest_per_precision", "main"]


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
        # the build's own latency check keeps its defaults: build times are what a user pays
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
    want: int,
) -> dict[str, Any]:
    from compiler.core.host import probe_host
    from compiler.measure.timing import batch_size, describe_method
    from compiler.measure.workers import reference_contender
    from compiler.serving.manifest import read_manifest
    from perf.flops import count_flops
    from perf.measure import (
        a_a_control,
        latency_repeats,
        olive_contender,
        olive_parity,
        open_in_process,
        package_contenders,
        package_parity,
    )

    pkg = work / model.name / "pkg-cold"
    manifest = read_manifest(pkg)
    feed = manifest.contract.validate_feeds(data.samples[0])
    flops = count_flops(pkg / "reference" / "model.onnx", feed)
    ours, not_measured = package_contenders(pkg, probe_host())
    olive = [olive_contender(job) for job in olive_jobs.values() if job.get("artifact")]
    contenders = [a_a_control(pkg), *ours, *olive]
    batch = batch_size(manifest.contract, feed)
    policy = plan.latency_policy()
    reference = reference_contender(pkg / "reference" / "model.onnx")
    latency = latency_repeats(
        contenders, reference, feed, manifest.contract, policy, repeats=plan.repeats, batch=batch
    )
    rows = [_row(None, latency["reference"], peak, flops.total)]
    ref_runner = open_in_process(a_a_control(pkg), manifest.contract)  # the reference, for the task
    try:
        if data.task is not None:
            rows[0]["task"] = _task(data, ref_runner)
    finally:
        ref_runner.close()
    for c in contenders:
        row = _row(c, latency.get(c.id, {}), peak, flops.total)
        rows.append(row)
        if c.origin == "reference":
            row["parity"] = {"status": "reference", "cosine": 1.0}
            continue
        if c.origin == "compile-pkg":
            row["parity"] = package_parity(manifest, c.id)
        try:
            runner = open_in_process(c, manifest.contract)
        except Exception as exc:  # noqa: BLE001 - an artifact failing to load is a finding
            row["error"] = f"failed to load: {type(exc).__name__}: {exc}"[:400]
            continue
        try:
            if c.origin == "olive":
                row["parity"] = olive_parity(runner, pkg, manifest)
            if data.task is not None:
                row["task"] = _task(data, runner)
        finally:
            runner.close()
    larger = (
        _larger_batch(pkg, manifest.contract, rows, ours, feed, plan, peak, flops.total, want)
        if want > 1
        else {"skipped": "--batch 1"}
    )
    return {
        "flops": flops.as_dict(),
        "batch": batch,
        "larger_batch": larger,
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "latency_method": describe_method(policy),
        "contenders": rows,
        "not_measured": not_measured,
        "task_set": data.task.description if data.task else None,
    }


def fastest_per_precision(rows: list[dict[str, Any]], ours: list[Any]) -> list[Any]:
    """Of the package's contenders `ours`, the one with the lowest pooled p50 in `rows` (the
    batch-1 table) for each precision, by id; those without a time are left out."""
    p50 = {
        r["id"]: r["latency"]["pooled"]["p50_ms"]
        for r in rows
        if r["origin"] == "compile-pkg" and not r.get("error") and r["latency"].get("pooled")
    }
    fastest: dict[str, Any] = {}
    for c in ours:
        if c.id in p50 and (c.precision not in fastest or p50[c.id] < p50[fastest[c.precision].id]):
            fastest[c.precision] = c
    return sorted(fastest.values(), key=lambda c: c.id)


def _larger_batch(
    pkg: Path,
    contract: Any,
    rows: list[dict[str, Any]],
    ours: list[Any],
    feed: dict[str, Any],
    plan: Plan,
    peak: dict[str, Any],
    flops: float,
    want: int,
) -> dict[str, Any]:
    """The fastest of the package's artifacts of each precision at batch 1 (by pooled p50),
    timed again with the feed tiled to the largest batch <= `want` the contract admits,
    beside the reference and its A/A control: how near each precision comes to its peak once
    a batch spreads the per-call costs."""
    from perf.measure import a_a_control, beside_reference, tile_batch

    tiled, batch = tile_batch(contract, feed, want)
    if batch == 1:
        return {"skipped": "the contract admits no batch > 1"}
    fastest = fastest_per_precision(rows, ours)
    if not fastest:
        return {"skipped": "no artifact of the package was timed at batch 1"}
    policy = plan.latency_policy()
    latency = beside_reference(
        pkg, fastest, tiled, contract, policy, repeats=plan.repeats, batch=batch
    )
    return {
        "batch": batch,
        "contenders": [
            _row(None, latency["reference"], peak, flops * batch),
            *(
                _row(c, latency.get(c.id, {}), peak, flops * batch)
                for c in [a_a_control(pkg), *fastest]
            ),
        ],
    }


def _row(c: Any, latency: dict[str, Any], peak: dict[str, Any], flops: float) -> dict[str, Any]:
    """One contender's line (None: the reference): latency, and the fraction of peak."""
    from perf.peak import fraction_of_peak, peak_for

    origin, precision = (c.origin, c.precision) if c else ("reference", "fp32")
    row: dict[str, Any] = {
        "id": c.id if c else "reference",
        "origin": origin,
        "precision": precision,
        "runner": latency.get("runner", {}),
        "latency": latency,
    }
    if latency.get("error"):
        row["error"] = "latency: " + latency["error"]
    pooled = latency.get("pooled")
    if pooled:
        key = peak_for(precision, peak)
        row["achieved_gflops"] = flops / (pooled["p50_ms"] / 1e3) / 1e9
        row["fraction_of_peak"] = fraction_of_peak(row["achieved_gflops"], key, peak)
        row["peak_used"] = key
    return row


def _task(data: ModelData, runner: Any) -> dict[str, Any]:
    assert data.task is not None
    scored = data.task.score([runner.run(f) for f in data.task.feeds])
    return {"metric": data.task.metric, **scored}


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
    ap.add_argument(
        "--batch",
        type=int,
        default=8,
        help="the larger batch the fastest artifact of each precision is timed at (1: none)",
    )
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
    try:
        names = parse_models(args.models, MODELS)
    except ValueError as exc:
        ap.error(str(exc))

    from compiler.core.host import probe_host
    from compiler.measure.timing import describe_method
    from perf.peak import measure_peak, refresh_fractions, remeasure_peak
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
            "latency_confidence": plan.latency_policy().confidence,
            "one_change": one_change,
            "dropped_variants": list(dropped),
            "note": plan.note(),
            "latency_note": f"{plan.repeats} independent measurements per contender (the "
            "order rotates between them), each by the packages' own method: "
            + describe_method(plan.latency_policy())
            + "; on one parity sample. The speedup's interval pools the pairs of all "
            "measurements; the spread is the range of the measurements' own estimates; "
            "p50/p99 pooled.",
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
    _log(f"Olive: {len(olive_jobs)} jobs, a process each")  # phase 2: the peer
    for name in prepared:
        for wf in plan.olive_workflows:
            shutil.rmtree(work / "olive" / name / wf, ignore_errors=True)
    olive = run_olive(olive_jobs, work, timeout_s=540)
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
                _measure(MODELS[name], data, plan, work, doc["peak"], olive_for, args.batch)
            )
        except Exception as exc:  # noqa: BLE001 - one model's failure must not lose the rest
            doc["models"][name]["error"] = f"measurement failed: {type(exc).__name__}: {exc}"
            _log(f"{name}: {doc['models'][name]['error']}")
        doc["models"][name]["olive"] = olive_for
    _log("peak: a second round after the models")  # a round alone can under-read (peak.py)
    doc["peak"] = remeasure_peak(doc["peak"])
    refresh_fractions(
        [
            c
            for m in doc["models"].values()
            for c in [*m.get("contenders", []), *m.get("larger_batch", {}).get("contenders", [])]
        ],
        doc["peak"],
    )
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
