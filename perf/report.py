"""The results as a person reads them: a markdown table per figure, and a latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perf.peak import over_peak, peak_rounds

__all__ = ["larger_batch_table", "render_markdown", "render_plot", "speedup_cell", "spread_cell"]

TICKS = (0.125, 0.25, 0.5, 1, 2, 4, 8, 16)  # the plot's speedup axis


def _models(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The results' models in the suite's order (the JSON file sorts its keys)."""
    from perf.models import MODELS

    rank = {n: i for i, n in enumerate(MODELS)}
    return sorted(doc["models"].items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def _f(v: Any, spec: str = ".2f", none: str = "-") -> str:
    if v is None:
        return none
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def _nodes(build: dict[str, Any] | None) -> str:
    if not build:
        return "-"
    if build.get("returncode"):
        return f"exit {build['returncode']}"
    n = build.get("nodes", {})
    parts = [f"{n.get('ran', 0)} ran", f"{n.get('cached', 0)} cached"]
    parts += [f"{n[k]} {k}" for k in ("failed", "skipped") if n.get(k)]
    return ", ".join(parts)


def _build_cell(build: dict[str, Any] | None) -> str:
    if not build:
        return "-"
    return f"{build['seconds']:.1f} s / {build['peak_rss_mib']:.0f} MiB ({_nodes(build)})"


def _olive_cell(job: dict[str, Any] | None, planned: bool) -> str:
    if not planned:
        return "full run only"
    if not job:
        return "not run"
    if job.get("error"):
        return f"failed after {job['seconds']:.1f} s"
    wall = job.get("process_seconds")  # a fresh process per job (older runs: one for all)
    whole = f" ({wall:.1f} s process)" if wall else ""
    return f"{job['seconds']:.1f} s{whole} / {job['peak_rss_mib']:.0f} MiB"


def _olive_prose(olive: dict[str, Any]) -> str:
    imp = _f(olive.get("import_seconds"), ".1f")
    if olive.get("per_process"):
        return (
            "Olive: the same model through Olive's closest workflows, each in a fresh Olive "
            "process: the workflow's seconds, then (in brackets) the whole process's, with "
            f"its import ({imp} s) and the interpreter's start."
        )
    return (  # runs before 2026-12-05: one process for every job
        f"Olive: the same model through Olive's closest workflows, in one Olive process (its "
        f"import, {imp} s, paid once, is not in these figures)."
    )


def speedup_cell(rec: dict[str, Any]) -> str:
    s = rec.get("speedup")
    if not s:
        return "-"
    return f"{s['estimate']:.2f}x [{s['low']:.2f}-{s['high']:.2f}] ({s['pairs']} pairs)"


def spread_cell(rec: dict[str, Any]) -> str:
    s = rec.get("spread")
    if not s:
        return "-"
    return f"{s['min']:.2f}-{s['max']:.2f} (±{s['max_deviation'] * 100:.1f} %)"


def _parity(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    if p.get("cosine") is None:
        return str(p.get("status", "-"))
    top1 = f", top-1 {p['top1_agreement']:.2f}" if p.get("top1_agreement") is not None else ""
    return f"{p['status']}: cos {p['cosine']:.5f}{top1}"


def _task(t: dict[str, Any] | None) -> str:
    return "-" if not t else f"{t['metric']} {t['value']:.3f}"


def _header(doc: dict[str, Any]) -> list[str]:
    h = doc["host"]
    libs = ", ".join(f"{k} {v}" for k, v in sorted(doc["libraries"].items()))
    peak = doc["peak"]
    lines = [
        f"# compile-pkg benchmarks: {doc['date']} on {h.get('hostname') or 'host'} "
        f"({'--quick' if doc['quick'] else 'full'})",
        "",
        f"Host: {h['arch']} {h['cpu_model']} x{h['cpu_count']}, ISA {', '.join(h['isa'])}, "
        f"{h['os']}; GPUs: {', '.join(g['name'] for g in h['gpus']) or 'none'}. "
        f"Load average at start {doc['load_average'][0]:.1f}, at end "
        f"{doc.get('load_average_end', [0])[0]:.1f}: absolute figures move with the host's load; "
        "speedups are ratios taken in one run, with their intervals.",
        "",
        f"Libraries: {libs}.",
        "",
        f"Machine peak (measured in this run, {peak['method']}): fp32 "
        f"{peak['fp32']['gflops']:.1f} GFLOP/s ({peak['fp32']['kernel']}), int8 "
        f"{peak['int8']['gflops']:.1f} GOP/s ({peak['int8']['kernel']})"
        + (
            f", bf16 {peak['bf16']['gflops']:.1f} GFLOP/s ({peak['bf16']['kernel']})."
            if "bf16" in peak
            else "."
        )
        + peak_rounds(peak),
        "",
        f"Run: `{doc['command']}`, {doc['wall_seconds']:.0f} s wall. {doc['plan']['note']}",
    ]
    return lines


def _build_table(doc: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Builds: `compile-pkg --targets " + doc["plan"]["targets"] + "` as a child process",
        "",
        "Seconds / peak RSS (nodes ran vs cached, from the manifest's build.nodes). "
        "Cold: empty cache. Warm: same command again. One change: `--set "
        + doc["plan"]["one_change"]
        + "` (only the nodes depending on it should run). "
        + _olive_prose(doc.get("olive", {})),
        "",
        "| model | weights | GFLOP | cold | warm | one change | Olive ort-int8 | Olive ov-int8 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    planned = set(doc["plan"]["olive_workflows"])
    for name, m in _models(doc):
        if m.get("error"):
            lines.append(f"| {name} | - | - | skipped: {m['error'][:120]} | | | | |")
            continue
        b, o = m["builds"], m.get("olive", {})
        lines.append(
            f"| {name} | {m['weights'].split(':')[0]} | {m['flops']['gflop']:.3f} "
            f"| {_build_cell(b.get('cold'))} | {_build_cell(b.get('warm'))} "
            f"| {_build_cell(b.get('one-change'))} "
            f"| {_olive_cell(o.get('ort-int8'), 'ort-int8' in planned)} "
            f"| {_olive_cell(o.get('ov-int8'), 'ov-int8' in planned)} |"
        )
    for name, m in _models(doc):
        warm = m.get("builds", {}).get("warm") or {}
        if warm.get("reran"):
            lines.append(
                f"\nThe warm build of {name} re-ran {len(warm['reran'])} nodes that "
                f"should have been cached: {', '.join(warm['reran'])}."
            )
    return lines


def _artifact_table(doc: dict[str, Any]) -> list[str]:
    conf = _confidence(doc)
    lines = [
        "",
        "## Artifacts on this host, side by side with the ONNX Runtime fp32 reference",
        "",
        "Latency: " + doc["plan"]["latency_note"] + " Speedup = reference time / artifact "
        f"time: the median over all paired blocks, [its {conf} confidence interval] (pairs). "
        "Repeats: the lowest and highest of the independent measurements' estimates, and the "
        "largest distance of one from the pooled estimate. `reference (A/A)` is the reference "
        "timed against itself in two workers: the method's own noise, true value 1. "
        "% of peak = the model's FLOPs / p50 / the measured peak of the artifact's precision "
        "(fp32 peak for fp32, int8 peak for int8, bf16 peak for bf16 where the host has native "
        "bf16, else fp32). Parity: compile-pkg's artifacts from the "
        "package's own report; Olive's measured here against the same reference outputs with "
        "the same metrics (worst output: cosine, top-1 agreement). Task: accuracy on real data "
        "(real models only).",
        "",
        "| model | artifact | by | precision | p50 ms | p99 ms | items/s | speedup vs ref "
        "| repeats | % of peak | parity | task |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in _models(doc):
        if m.get("error"):
            continue
        for c in m["contenders"]:
            lat = c.get("latency", {})
            pooled = lat.get("pooled", {})
            lines.append(
                f"| {name} | {c['id']} | {c['origin']} | {c['precision']} "
                f"| {_f(pooled.get('p50_ms'))} | {_f(pooled.get('p99_ms'))} "
                f"| {_f(pooled.get('throughput_per_s'), '.1f')} | {_speed_cell(c)} "
                f"| {spread_cell(lat)} | {_peak_cell(c)} "
                f"| {_parity(c.get('parity'))} | {_task(c.get('task'))} |"
            )
    return lines


def _speed_cell(c: dict[str, Any]) -> str:
    """A contender row's speedup with its interval, or why it has none."""
    return speedup_cell(c.get("latency", {})) if not c.get("error") else f"error: {c['error'][:80]}"


def _peak_cell(c: dict[str, Any]) -> str:
    """A contender row's percentage of its precision's peak, flagged where it is over 100."""
    peak = c.get("fraction_of_peak")
    flag = " (over peak: the probe under-read)" if over_peak(peak) else ""
    return _f(peak * 100 if peak is not None else None, ".1f") + flag


def larger_batch_table(doc: dict[str, Any]) -> list[str]:
    """The fastest artifact of each precision timed again at the larger batch (run.py)."""
    timed = [(n, m["larger_batch"]) for n, m in _models(doc) if m.get("larger_batch")]
    if not timed:
        return []
    lines = [
        "",
        "## At a larger batch: the fastest artifact of each precision",
        "",
        "The fastest of the package's artifacts of each precision at batch 1 (by p50), timed "
        "again by the same method with the first sample tiled to the batch, beside the "
        "reference at the same batch. % of peak as above, with the model's FLOPs times the "
        "batch.",
        "",
        "| model | batch | artifact | precision | p50 ms | items/s | speedup vs ref | repeats "
        "| % of peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, lb in timed:
        if lb.get("skipped"):
            lines.append(f"| {name} | - | not timed: {lb['skipped']} | | | | | | |")
            continue
        for c in lb["contenders"]:
            lat = c.get("latency", {})
            pooled = lat.get("pooled", {})
            itself = c["id"] == "reference"
            lines.append(
                f"| {name} | {lb['batch']} | {c['id']} | {c['precision']} "
                f"| {_f(pooled.get('p50_ms'))} | {_f(pooled.get('throughput_per_s'), '.1f')} "
                f"| {'-' if itself else _speed_cell(c)} | {'-' if itself else spread_cell(lat)} "
                f"| {_peak_cell(c)} |"
            )
    return lines


def _confidence(doc: dict[str, Any]) -> str:
    """The confidence the run asked of each interval (fewer pairs than it needs: less)."""
    return f"{doc['plan'].get('latency_confidence', 0.95):.0%}"


def _control_summary(doc: dict[str, Any]) -> list[str]:
    """The same-runtime rows (A/A, cpu/ort-fp32): how far from 1 the method lands."""
    lines = [
        "",
        "## The method's own spread: same runtime as the reference",
        "",
        "| model | contender | speedup [interval] | repeats | within ±5 % |",
        "|---|---|---|---|---|",
    ]
    for name, m in _models(doc):
        for c in m.get("contenders", []):
            if c["id"] not in ("reference (A/A)", "cpu/ort-fp32"):
                continue
            lat = c.get("latency", {})
            s, sp = lat.get("speedup"), lat.get("spread")
            inside = (
                "yes"
                if s
                and sp
                and 0.95 <= s["low"]
                and s["high"] <= 1.05
                and sp["min"] >= 0.95
                and sp["max"] <= 1.05
                else "no"
            )
            lines.append(
                f"| {name} | {c['id']} | {speedup_cell(lat)} | {spread_cell(lat)} | {inside} |"
            )
    return lines


def _not_measured(doc: dict[str, Any]) -> list[str]:
    """One line per model and reason, artifacts grouped."""
    lines = ["", "## Not measured on this host (and why)", ""]
    for name, m in _models(doc):
        if m.get("error"):
            lines.append(f"- **{name}**: model skipped: {m['error']}")
            continue
        by_reason: dict[str, list[str]] = {}
        for s in m.get("not_measured", []):
            by_reason.setdefault(s["why"], []).append(f"`{s['id']}`")
        for why, ids in by_reason.items():
            lines.append(f"- {name} {', '.join(ids)}: {why}")
        for wf, job in m.get("olive", {}).items():
            if job and job.get("error"):
                lines.append(f"- {name} Olive `{wf}`: failed: {job['error'][:300]}")
    for note in doc.get("notes", []):
        lines.append(f"- {note}")
    return lines


def render_markdown(doc: dict[str, Any], plot_name: str | None) -> str:
    lines = _header(doc) + _build_table(doc) + _artifact_table(doc) + larger_batch_table(doc)
    lines += _control_summary(doc)
    lines += _not_measured(doc)
    if plot_name:
        lines += ["", f"![speedup over the reference per artifact per model]({plot_name})"]
    lines += [
        "",
        "Raw samples, per-repeat figures, node lists and library versions: the JSON "
        "file beside this one.",
    ]
    return "\n".join(lines) + "\n"


def render_plot(doc: dict[str, Any], path: Path) -> bool:
    """Speedup over the reference per artifact, one panel per model, whiskers = its interval.
    Returns False (and writes nothing) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    models = [(n, m) for n, m in _models(doc) if not m.get("error")]
    if not models:
        return False
    cols = min(4, len(models))
    rows = (len(models) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    colors = {"reference": "#777777", "compile-pkg": "#1f77b4", "olive": "#ff7f0e"}
    for ax, (name, m) in zip(axes.flat, models, strict=False):
        cs = [c for c in m["contenders"] if c.get("latency", {}).get("speedup")]
        est = [c["latency"]["speedup"]["estimate"] for c in cs]
        lo = [e - c["latency"]["speedup"]["low"] for e, c in zip(est, cs, strict=True)]
        hi = [c["latency"]["speedup"]["high"] - e for e, c in zip(est, cs, strict=True)]
        y = range(len(cs))
        ax.barh(list(y), est, xerr=[lo, hi], color=[colors[c["origin"]] for c in cs])
        ax.axvline(1.0, color="#444444", linewidth=0.8, linestyle="--")
        ax.set_yticks(list(y), [c["id"] for c in cs], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xscale("log")  # untuned or emulated artifacts can be 100x off the rest
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(TICKS))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("speedup over the reference (log scale)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(models) :]:
        ax.axis("off")
    fig.suptitle(
        f"speedup over the ORT fp32 reference on {doc['host']['cpu_model']} "
        f"x{doc['host']['cpu_count']} ({doc['date']}); grey: A/A control, blue: compile-pkg, "
        "orange: Olive; whiskers: interval",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
