"""The tables of perf/picks.py's results: serving's pick per real model, its speedup over the
reference with its interval at batch 1 and the larger batch, the method's own noise beside it,
the task check, the cold build beside Olive's, and the geomeans."""

from __future__ import annotations

import math
from typing import Any

from perf.peak import over_peak, peak_rounds
from perf.report import speedup_cell

__all__ = ["geomean_of", "render"]


def geomean_of(values: list[float]) -> float | None:
    vals = [v for v in values if v > 0 and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None


def _speed(entry: dict[str, Any], batch: str, field: str = "estimate") -> float | None:
    rec = entry.get("batches", {}).get(batch, {}).get("pick", {}).get("speedup")
    return float(rec[field]) if rec else None


def _larger(entry: dict[str, Any]) -> str | None:
    sizes = [b for b, rec in entry.get("batches", {}).items() if b != "1" and "pick" in rec]
    return max(sizes, key=int) if sizes else None


def _pick_cell(rec: dict[str, Any]) -> str:
    """The pick's speedup; the reference served as itself is 1.00x by definition (its A/A
    control, in the next column, is the method's noise)."""
    return "1.00x (the reference itself)" if rec.get("itself") else speedup_cell(rec)


def _row(name: str, e: dict[str, Any]) -> str:
    if "skipped" in e or "error" in e or "pick" not in e:
        why = e.get("skipped") or e.get("error") or "cold build failed"
        return f"| {name} | - | - | - | - | - | - | {why} |"
    one = e["batches"].get("1", {})
    big = _larger(e)
    big_cell = f"b{big}: {_pick_cell(e['batches'][big]['pick'])}" if big else "-"
    frac = one.get("fraction_of_peak")
    frac_cell = f"{frac * 100:.1f} % ({one.get('peak_used')})" if frac else "-"
    if over_peak(frac):
        frac_cell += ": over peak, the probe under-read"
    t = e["task"]
    task = f"{t['pick']} vs {t['original']} ({'as well' if t['as_well'] else 'WORSE'})"
    unsteady = (one.get("steadiness") or {}).get("unsteady")
    mark = " **unsteady**" if unsteady else ""
    return (
        f"| {name} | {e['pick']} ({e['precision']}) | {_pick_cell(one.get('pick', {}))}{mark} | "
        f"{speedup_cell(one.get('control', {}))} | {big_cell} | {frac_cell} | {task} | "
        f"{e['reason'][:160]} |"
    )


def _seconds(run: dict[str, Any] | None) -> float | None:
    return float(run["seconds"]) if run and run.get("returncode") == 0 else None


def _olive_wall(olive: dict[str, Any], olive_import: float | None) -> float | None:
    """Olive's wall time for the job: its fresh process's (interpreter start, import,
    workflow, exit); runs before 2026-12-05 ran every job in one process, and there it is the
    workflow's seconds plus the import paid once."""
    if not olive.get("seconds") or olive.get("error"):
        return None
    if olive.get("process_seconds"):
        return float(olive["process_seconds"])
    return float(olive["seconds"]) + olive_import if olive_import is not None else None


def _build_row(name: str, e: dict[str, Any], olive_import: float | None) -> str:
    b = e.get("builds")
    if not b:
        return f"| {name} | - | - | - | - | - | - | - | - | - |"
    olive = e.get("olive") or {}
    job = float(olive["seconds"]) if olive.get("seconds") and not olive.get("error") else None
    o = f"{job:.1f} s" if job else (olive.get("error", "not run")[:80])
    wall = _olive_wall(olive, olive_import)
    if job and wall is not None:
        o += f" ({wall:.1f} s)"
    evaluated = e.get("olive_eval") or {}
    eval_wall = _olive_wall(evaluated, olive_import)
    ev = f"{eval_wall:.1f} s" if eval_wall is not None else evaluated.get("error", "-")[:80]
    scores = evaluated.get("evaluation") or {}
    if eval_wall is not None and "task-score" in scores.get("output", {}):
        ev += f" (task {scores['output']['task-score']:.3g} vs {scores['input']['task-score']:.3g})"
    elif eval_wall is not None and scores.get("output", {}).get("error"):
        ev += f" (its int8 model fails: {scores['output']['error'][:90]})"
    cold, same = _seconds(b.get("cold")), _seconds(b.get("same-job"))

    def cell(v: float | None) -> str:
        return f"{v:.1f} s" if v is not None else "-"

    def ratio(a: float | None, over: float | None) -> str:
        return f"{a / over:.2f}x" if a is not None and over else "-"

    return (
        f"| {name} | {cell(cold)} | {cell(_seconds(b.get('warm')))} | {cell(same)} | {o} | "
        f"{ratio(cold, job)} | {ratio(same, job)} | {ratio(same, wall)} | {ev} | "
        f"{ratio(same, eval_wall)} |"
    )


# the same job's nodes, in the order they run: a node id's kind ("cpu:quantize#60fbcd7f" ->
# quantize, "cpu/ort-int8:verify" -> verify)
_JOB_NODES = ("normalize", "data", "reference", "simplify", "quantize", "compile", "verify")


def _node_kind(node: str) -> str:
    return node.rsplit(":", 1)[-1].split("#", 1)[0]


def _job_row(name: str, e: dict[str, Any]) -> str | None:
    run = (e.get("builds") or {}).get("same-job") or {}
    spent = run.get("node_seconds")
    if run.get("returncode") != 0 or not spent:
        return None
    by_kind: dict[str, float] = {}
    for node, seconds in spent.items():
        kind = _node_kind(node)
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    cells = [f"{by_kind[k]:.2f}" if k in by_kind else "-" for k in _JOB_NODES]
    others = sum(v for k, v in by_kind.items() if k not in _JOB_NODES)
    rest = float(run["seconds"]) - sum(by_kind.values())
    return (
        f"| {name} | {float(run['seconds']):.1f} | {' | '.join(cells)} | "
        f"{others:.2f} | {rest:.2f} |"
    )


def _job_time(models: dict[str, Any]) -> list[str]:
    """Where the same job's wall time went: each node's own seconds (the manifest's), and
    what is outside them (interpreter start, imports, planning, hashing, packaging)."""
    rows = [r for name, e in models.items() if (r := _job_row(name, e))]
    if not rows:
        return []
    return [
        "## Where the same job's time went",
        "",
        "Seconds of each node of the cold same-job build (the manifest's `build.nodes`: the "
        "node's own time in its worker process), and the wall time outside them: the CLI's "
        "interpreter start and imports, planning, hashing, the executor's workers, writing "
        "the package (negative where nodes ran side by side). `quantize` holds the int8 "
        "calibration and its accuracy search; `verify` the artifact's parity and task check "
        "on the samples and its paired latency against the reference.",
        "",
        f"| model | wall s | {' | '.join(_JOB_NODES)} | other nodes | outside the nodes |",
        "|---|---|" + "---|" * (len(_JOB_NODES) + 2),
        *rows,
        "",
    ]


def _fastest(e: dict[str, Any]) -> dict[str, Any] | None:
    timed = [a for a in e.get("built", []) if a.get("speedup")]
    return max(timed, key=lambda a: a["speedup"]["estimate"]) if timed else None


def _picked_at_build(e: dict[str, Any]) -> float | None:
    """The pick's speedup in its build record (1 for the reference): the basis the fastest
    artifact built is measured on."""
    if e.get("pick") == "reference":
        return 1.0
    rec = next((a for a in e.get("built", []) if a["id"] == e.get("pick")), None)
    return rec["speedup"]["estimate"] if rec and rec.get("speedup") else None


def _ceiling_row(name: str, pick: str, picked: float, best: dict[str, Any]) -> str:
    sp = best["speedup"]
    return (
        f"| {name} | {pick}: {picked:.2f}x | {best['id']} ({best['precision']}) | "
        f"{sp['estimate']:.2f}x [{sp['low']:.2f}-{sp['high']:.2f}] | {best['parity']} |"
    )


def _ceiling(models: dict[str, Any]) -> list[str]:
    """What accuracy costs: per model, the fastest artifact built whatever its verdict, beside
    the pick, both from the cold build's own records; the geomeans of each."""
    found = {
        name: (name, e["pick"], picked, best)
        for name, e in models.items()
        if (best := _fastest(e)) and (picked := _picked_at_build(e))
    }
    rows = list(found.values())
    if not rows:
        return []
    picked_g = geomean_of([picked for _, _, picked, _ in rows])
    best_g = geomean_of([max(1.0, best["speedup"]["estimate"]) for *_, best in rows])
    return [
        "## What accuracy costs: the fastest artifact built, whatever its verdict",
        "",
        "From the cold build's own latency records at batch 1 (one measurement each, so "
        "this table is not the pooled one above). The reference counts as 1.00x where every "
        f"artifact is slower. Geomean over {len(rows)} models: **the picks {picked_g:.2f}x, "
        f"the fastest artifacts {best_g:.2f}x**, which is the most serving could get on this "
        "host from these variants if no verdict stood in the way.",
        "",
        "| model | pick at build | fastest built | its speedup | its verdict |",
        "|---|---|---|---|---|",
        *[_ceiling_row(*found[n]) if n in found else f"| {n} | - | - | - | - |" for n in models],
        "",
    ]


def _steady_geomean(models: dict[str, Any]) -> str:
    """ " Over the steady timings only: ..." where some batch-1 timing was unsteady."""
    unsteady = [
        n
        for n, e in models.items()
        if ((e.get("batches", {}).get("1") or {}).get("steadiness") or {}).get("unsteady")
    ]
    if not unsteady:
        return ""
    steady = [v for n, e in models.items() if n not in unsteady if (v := _speed(e, "1"))]
    g = geomean_of(steady)
    return (
        f" **Unsteady** at batch 1 ({', '.join(unsteady)}: their timing may not hold, see "
        f"'Was the host steady'); over the {len(steady)} steady ones: "
        + (f"{g:.2f}x." if g else "none.")
    )


def _steadiness_row(name: str, batch: str, b: dict[str, Any]) -> str:
    st = b.get("steadiness") or {}
    other = st.get("other_work")
    here, build = st.get("reference_p50_ms"), st.get("reference_p50_ms_at_build")
    before = "; ".join(
        f"{a['speedup']['estimate']:.2f}x, {a['unsteady']}" if a.get("speedup") else a["unsteady"]
        for a in st.get("other_attempts", [])
    )
    work = f"{other['cpus']:g} of {other['of']}" if other else "-"
    here_ms = f"{here:.3g}" if here else "-"
    build_ms = f"{build:.3g}" if build else "-"
    verdict = st.get("unsteady") or "steady"
    return f"| {name} | b{batch} | {work} | {here_ms} | {build_ms} | {verdict} | {before or '-'} |"


def _steadiness(models: dict[str, Any]) -> list[str]:
    """Per timing: the other work over it, its reference beside the build's, and any first
    attempt that was timed again (perf/picks.py `_steady_timing`)."""
    rows = [
        _steadiness_row(name, batch, b)
        for name, e in models.items()
        for batch, b in e.get("batches", {}).items()
        if "steadiness" in b
    ]
    if not rows:
        return []
    return [
        "## Was the host steady while it timed?",
        "",
        "Other work: CPUs' worth of busy time on the host (steal included) that was not this "
        "benchmark's, over the whole timing. A timing is done again, once, where other work "
        "kept more than a quarter of the cpus busy or (batch 1) the reference ran more than "
        "1.3x slower or faster than at build; the table above keeps the attempt without other "
        "work, else the one whose reference ran faster (other work only slows a run), never "
        "choosing by the pick's own time; two attempts whose references agree within 1.3x "
        "count as steady (the build's time was the odd one).",
        "",
        "| model | batch | other work (cpus) | reference p50 ms | at build | verdict | "
        "attempt not kept |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def render(doc: dict[str, Any]) -> str:
    host = doc["host"]
    flags = ", ".join(sorted(host.get("isa", [])))
    models = doc["models"]
    ones = [_speed(e, "1") for e in models.values()]
    lows = [_speed(e, "1", "low") for e in models.values()]
    ok = [e for e in models.values() if "task" in e and isinstance(e["task"], dict)]
    g, g_low = geomean_of([v for v in ones if v]), geomean_of([v for v in lows if v])
    olive_import = doc.get("olive", {}).get("import_seconds")
    imported = olive_import if olive_import is not None else "?"
    lines = [
        f"# Serving's pick on the real models: {doc['date']}",
        "",
        f"Host: {host['arch']} {host['cpu_model']} x{host['cpu_count']}; CPU flags: {flags}. "
        f"Load average {doc['load_average'][0]:.1f} at start, "
        f"{doc.get('load_average_end', [float('nan')])[0]:.1f} at end. Targets built: "
        f"`{doc['targets']}`. Command: `{doc['command']}` ({doc.get('wall_seconds', 0):.0f} s).",
        "",
        f"**Geomean of the pick's speedup at batch 1 over {len([v for v in ones if v])} "
        f"models: {g:.2f}x** (geomean of the intervals' lower bounds {g_low:.2f}x). "
        f"Task as well as the original: {sum(e['task']['as_well'] for e in ok)} of {len(ok)}."
        + _steady_geomean(models)
        if g and g_low
        else "No model was measured.",
        "",
        "Speedup = reference time / pick time, median over paired blocks with its 95 % "
        "interval (pairs), pooled over "
        f"{doc['plan']['repeats']} independent measurements; `A/A` is the reference timed "
        "against itself the same way (true value 1: the method's noise in this run). % of peak: "
        "the model's FLOPs per item x batch / p50 / the machine peak measured in this run for "
        "the pick's precision (bf16: the bf16 peak where the host has native bf16, else fp32).",
        "",
        "| model | pick | speedup b1 | A/A b1 | larger batch | % of peak b1 | held-out task: "
        "pick vs original | why picked |",
        "|---|---|---|---|---|---|---|---|",
        *[_row(n, e) for n, e in models.items()],
        "",
        *_ceiling(models),
        *_steadiness(models),
        "## Cold builds beside Olive",
        "",
        f"`compile-pkg MODEL --targets {doc['targets']}` (default pipeline, labelled data, task "
        "metric) as a child process, empty cache, then again warm; `same job`: a cold build "
        "of only the cpu target's ort-int8 variant (its accuracy loop, verdict and latency "
        "included), Olive's job. Olive's `ort-int8` workflow (static QDQ int8 on the same "
        "calibration feeds, no evaluation): "
        + (
            "each model's in a fresh Olive process, as `olive run` runs it; the column gives "
            "the workflow's seconds and, in brackets, the whole process's (interpreter start, "
            f"Olive's import, median {imported} s, the workflow, exit): Olive's wall time, "
            "which the last column divides by."
            if doc.get("olive", {}).get("per_process")
            else f"every model's in one Olive process, its import ({imported} s) paid once; "
            "in brackets and in the last column the workflow's seconds with the import added, "
            "as a fresh `olive run` pays it."
        )
        + " `Olive ort-int8 + evaluation`: the same workflow in a fresh process, then Olive's "
        "evaluator (OnnxEvaluator, perf/olive_peer.py `evaluate`) on the input model and on "
        "the result: the task metric on the same labelled samples and Olive's latency metric "
        "(10 warm-up runs, 20 timed, unpaired): the work our same job's verdict does, Olive's "
        "way; its wall time is the whole process's, and the task scores of Olive's int8 model "
        "and of the original follow it.",
        "",
        "| model | cold | warm | same job, cold | Olive ort-int8 (wall) | cold / Olive | "
        "same job / Olive | same job / Olive's wall | Olive ort-int8 + evaluation, wall | "
        "same job / that |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[_build_row(n, e, olive_import) for n, e in models.items()],
        "",
    ]
    peak = doc.get("peak", {})
    if peak:
        lines.append(
            f"Machine peak in this run: fp32 {peak['fp32']['gflops']:.1f} GFLOP/s "
            f"({peak['fp32'].get('kernel', '')}), int8 {peak['int8']['gflops']:.1f} GOP/s "
            f"({peak['int8'].get('kernel', '')})"
            + (
                f", bf16 {peak['bf16']['gflops']:.1f} GFLOP/s ({peak['bf16'].get('kernel', '')})."
                if "bf16" in peak
                else "."
            )
            + peak_rounds(peak)
        )
    job = _job_time(models)
    if job:
        lines += ["", *job]
    return "\n".join(lines) + "\n"
