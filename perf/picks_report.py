"""The tables of perf/picks.py's results: serving's pick per real model, its speedup over the
reference with its interval at batch 1 and the larger batch, the method's own noise beside it,
the task check, the cold build beside Olive's, and the geomeans."""

from __future__ import annotations

import math
from typing import Any

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
    t = e["task"]
    task = f"{t['pick']} vs {t['original']} ({'as well' if t['as_well'] else 'WORSE'})"
    return (
        f"| {name} | {e['pick']} ({e['precision']}) | {_pick_cell(one.get('pick', {}))} | "
        f"{speedup_cell(one.get('control', {}))} | {big_cell} | {frac_cell} | {task} | "
        f"{e['reason'][:160]} |"
    )


def _build_row(name: str, e: dict[str, Any]) -> str:
    b = e.get("builds")
    if not b:
        return f"| {name} | - | - | - | - |"
    olive = e.get("olive") or {}
    o = (
        f"{olive['seconds']:.1f} s"
        if "seconds" in olive and not olive.get("error")
        else (olive.get("error", "not run")[:80])
    )
    ratio = (
        f"{b['cold']['seconds'] / olive['seconds']:.2f}x"
        if olive.get("seconds") and not olive.get("error")
        else "-"
    )
    return (
        f"| {name} | {b['cold']['seconds']:.1f} s | {b['warm']['seconds']:.1f} s | {o} | {ratio} |"
    )


def render(doc: dict[str, Any]) -> str:
    host = doc["host"]
    flags = ", ".join(sorted(host.get("isa", [])))
    models = doc["models"]
    ones = [_speed(e, "1") for e in models.values()]
    lows = [_speed(e, "1", "low") for e in models.values()]
    ok = [e for e in models.values() if "task" in e and isinstance(e["task"], dict)]
    g, g_low = geomean_of([v for v in ones if v]), geomean_of([v for v in lows if v])
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
        if g and g_low
        else "No model was measured.",
        "",
        "Speedup = reference time / pick time, median over paired blocks with its 95 % "
        "interval (pairs), pooled over "
        f"{doc['plan']['repeats']} independent measurements; `A/A` is the reference timed "
        "against itself the same way (true value 1: the method's noise in this run). % of peak: "
        "the model's FLOPs per item x batch / p50 / the machine peak measured in this run for "
        "the pick's precision (fp32 peak for fp32/bf16).",
        "",
        "| model | pick | speedup b1 | A/A b1 | larger batch | % of peak b1 | held-out task: "
        "pick vs original | why picked |",
        "|---|---|---|---|---|---|---|---|",
        *[_row(n, e) for n, e in models.items()],
        "",
        "## Cold builds beside Olive",
        "",
        f"`compile-pkg MODEL --targets {doc['targets']}` (default pipeline, labelled data, task "
        "metric) as a child process, empty cache, then again warm; Olive's `ort-int8` workflow "
        "(static QDQ int8 on the same calibration feeds) in one Olive process, its import "
        f"({doc.get('olive', {}).get('import_seconds', '?')} s) paid once and not in its "
        "figures.",
        "",
        "| model | cold | warm | Olive ort-int8 | cold / Olive |",
        "|---|---|---|---|---|",
        *[_build_row(n, e) for n, e in models.items()],
        "",
    ]
    peak = doc.get("peak", {})
    if peak:
        lines.append(
            f"Machine peak in this run: fp32 {peak['fp32']['gflops']:.1f} GFLOP/s "
            f"({peak['fp32'].get('kernel', '')}), int8 {peak['int8']['gflops']:.1f} GOP/s "
            f"({peak['int8'].get('kernel', '')})."
        )
    return "\n".join(lines) + "\n"
