"""The pictures of report.html as inline SVG drawn by matplotlib (no pyplot, no display, no
network at view time): the pass DAG, latency per artifact next to the reference, parity error
per output, the build timeline. Each takes plain figures and returns one `<svg>` element, or
"" where matplotlib is not installed (the report then shows the tables alone)."""

from __future__ import annotations

import importlib.util
import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Bar",
    "DagNode",
    "TimelineNode",
    "charts_available",
    "dag_svg",
    "error_svg",
    "latency_svg",
    "timeline_svg",
    "warm_imports",
]

_STATUS_COLORS = {
    "ran": "#4c9f70",
    "cached": "#8fb8de",
    "skipped": "#c9c9c9",
    "failed": "#d9534f",
    "deferred": "#f0ad4e",
}


@dataclass(frozen=True)
class DagNode:
    id: str
    stage: int
    parents: tuple[str, ...]
    status: str  # ran | cached | skipped | failed | ""


@dataclass(frozen=True)
class Bar:
    """One artifact's latency: p50 with p99 as the whisker, and the reference's p50."""

    label: str
    p50_ms: float
    p99_ms: float
    ref_p50_ms: float | None
    speedup: str  # `1.37x [1.31-1.44]`


@dataclass(frozen=True)
class TimelineNode:
    id: str
    status: str
    seconds: float


def charts_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def warm_imports() -> threading.Thread | None:
    """Import matplotlib on a thread of its own, started while a build's nodes run (the main
    process only waits on its workers then), so the report does not wait for it at the end:
    0.7 s of a 7 s cold build of a small model (measured 2026-12-01, py-spy). The thread ends
    with the import; a failed import is left to the report, which draws no pictures then."""
    if not charts_available():
        return None

    def load() -> None:
        try:
            import matplotlib.figure  # noqa: F401
        except Exception:  # a broken install: the report says so where it draws
            return

    thread = threading.Thread(target=load, name="compile-pkg-warm-imports")
    thread.start()
    return thread


def _figure(width: float, height: float, left: float = 0.3) -> Any:
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    rcParams["svg.hashsalt"] = "compile-pkg"  # stable element ids
    rcParams["font.size"] = 9
    fig = Figure(figsize=(width, height))
    bottom = min(0.6 / height, 0.4)  # room for the x label, whatever the height
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.15 / height, bottom=bottom)
    return fig


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(
        buf, format="svg", metadata={"Date": None, "Creator": None, "Type": None, "Format": None}
    )
    text = buf.getvalue()
    return text[text.index("<svg") :]


def dag_svg(nodes: Sequence[DagNode]) -> str:
    """The build DAG left to right by stage, nodes coloured by whether they ran or were cached."""
    if not nodes or not charts_available():
        return ""
    stages = sorted({n.stage for n in nodes})
    column = {s: i for i, s in enumerate(stages)}
    rows: dict[int, list[str]] = {}
    for n in nodes:
        rows.setdefault(n.stage, []).append(n.id)
    tallest = max(len(v) for v in rows.values())
    pos = {
        nid: (column[stage], (tallest - 1) / 2 - i)
        for stage, ids in rows.items()
        for i, nid in enumerate(ids)
    }
    fig = _figure(2.2 * len(stages) + 1, 0.5 * tallest + 1, left=0.02)
    ax = fig.subplots()
    for n in nodes:
        for p in n.parents:
            if p in pos:
                (x0, y0), (x1, y1) = pos[p], pos[n.id]
                ax.annotate(
                    "",
                    (x1 - 0.42, y1),
                    (x0 + 0.42, y0),
                    arrowprops={"arrowstyle": "->", "color": "#777", "lw": 0.8},
                )
    for n in nodes:
        x, y = pos[n.id]
        ax.text(
            x,
            y,
            n.id,
            ha="center",
            va="center",
            fontsize=7,
            bbox={"boxstyle": "round", "fc": _STATUS_COLORS.get(n.status, "#eee"), "ec": "#555"},
        )
    ax.set_xlim(-0.6, len(stages) - 0.4)
    ax.set_ylim(-tallest / 2 - 0.2, tallest / 2 + 0.2)
    ax.axis("off")
    return _svg(fig)


def latency_svg(bars: Sequence[Bar]) -> str:
    """p50 bars with p99 whiskers per artifact, each beside its reference's p50."""
    if not bars or not charts_available():
        return ""
    fig = _figure(7, 0.45 * len(bars) + 1.2)
    ax = fig.subplots()
    ys = range(len(bars))
    p50 = [b.p50_ms for b in bars]
    ax.barh(
        [y + 0.2 for y in ys],
        p50,
        height=0.38,
        color="#4c72b0",
        label="artifact p50 (whisker: p99)",
        xerr=[[0.0] * len(bars), [max(b.p99_ms - b.p50_ms, 0.0) for b in bars]],
        capsize=3,
    )
    refs = [b.ref_p50_ms or 0.0 for b in bars]
    ax.barh([y - 0.2 for y in ys], refs, height=0.38, color="#bbbbbb", label="reference p50")
    for y, b in zip(ys, bars, strict=True):
        ax.text(b.p99_ms, y + 0.2, f"  {b.speedup}", va="center", fontsize=7)
    ax.set_yticks(list(ys), [b.label for b in bars])
    ax.invert_yaxis()
    ax.set_xlabel("ms per inference")
    ax.set_xlim(0, max(max(b.p99_ms for b in bars), max(refs)) * 1.45)
    ax.legend(loc="best", fontsize=7)
    return _svg(fig)


def error_svg(errors: dict[str, dict[str, float]]) -> str:
    """Max abs error per output (bars per artifact), on a log scale: `errors[artifact][output]`."""
    if not errors or not charts_available():
        return ""
    from matplotlib.ticker import NullLocator

    outputs = sorted({o for per in errors.values() for o in per})
    fig = _figure(7, 0.35 * len(errors) * len(outputs) + 1.2)
    ax = fig.subplots()
    labels, values = [], []
    for aid, per in errors.items():
        for o in outputs:
            if o in per:
                labels.append(f"{aid} · {o}")
                values.append(max(per[o], 1e-12))  # exact agreement drawn at the floor
    ax.barh(range(len(values)), values, color="#dd8452")
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # minor ticks cost more time than they say
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("max abs error vs the reference (log; 1e-12 = exact)")
    lo = min(values)
    ax.set_xlim(10 ** math.floor(math.log10(lo)), max(values) * 10)
    return _svg(fig)


def timeline_svg(nodes: Sequence[TimelineNode]) -> str:
    """Each node's wall time in the order the scheduler ran them, coloured ran/cached/..."""
    if not nodes or not charts_available():
        return ""
    fig = _figure(7, 0.28 * len(nodes) + 1.2)
    ax = fig.subplots()
    start = 0.0
    for y, n in enumerate(nodes):
        ax.barh(y, max(n.seconds, 1e-3), left=start, color=_STATUS_COLORS.get(n.status, "#eee"))
        ax.text(start + n.seconds, y, f" {n.status} {n.seconds:.2f}s", va="center", fontsize=7)
        start += n.seconds
    ax.set_yticks(range(len(nodes)), [n.id for n in nodes])
    ax.invert_yaxis()
    ax.set_xlim(0, start * 1.3 + 1e-3)
    ax.set_xlabel("seconds since the build started (nodes in the order they ran)")
    return _svg(fig)
