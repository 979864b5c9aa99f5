"""The artifact rows `inspect`, the build summary and report.md show: status, parity and
latency with where each was measured, size, and how the artifact was made.

How it was made: its passes with the settings that differ from the defaults and the facts the
pass recorded (calibration method and sample count, nodes left in float, ...), the backend's
settings, the derived precision. The recipe is read back from the manifest's provenance: the
resolved config rebuilds the graph (the one place node ids are made), whose pass nodes key the
build's pass log. How it was measured: native, cross-host or emulated, on which host.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from compiler.core.parity import OutputParity
from compiler.core.records import LatencyRecord, MeasuredOn, PassRecord
from compiler.core.task import TaskScore, worse_bound
from compiler.packaging.output import human_bytes
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import PassNode, build_graph
from compiler.serving.manifest import Manifest
from compiler.serving.selection import parity_verdict
from passes.registry import PassConfig

__all__ = [
    "ArtifactRow",
    "BatchRow",
    "PassStep",
    "artifact_rows",
    "describe_host",
    "short_value",
    "tuned_text",
]

_SHOWN_ITEMS = 6  # list items shown in a summary before "+N more"


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PassStep(_Row):
    """One pass of an artifact's recipe: the settings that differ from the pass's defaults and
    the facts the pass recorded about this run (its own record, flattened)."""

    name: str
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    facts: dict[str, JsonValue] = Field(default_factory=dict)
    skipped: str = ""

    def summary(self) -> str:
        items = {**self.settings, **self.facts}
        inner = ", ".join(f"{k}={short_value(v)}" for k, v in items.items())
        skipped = f" skipped: {self.skipped}" if self.skipped else ""
        return f"{self.name}({inner}){skipped}" if inner else f"{self.name}{skipped}"


class BatchRow(_Row):
    """Items/s at one serving batch size, next to the reference at the same batch."""

    batch: int
    status: str
    reason: str = ""
    items_per_s: float | None = None
    reference_items_per_s: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None

    @property
    def text(self) -> str:
        """`1.42x [1.30-1.51]` of items/s, or the status and reason."""
        if self.ratio is None or self.ratio_low is None or self.ratio_high is None:
            return f"{self.status}: {self.reason}" if self.reason else self.status
        return f"{self.ratio:.2f}x [{self.ratio_low:.2f}-{self.ratio_high:.2f}]"


def _batch_rows(lat: LatencyRecord | None) -> list[BatchRow]:
    return [
        BatchRow(
            batch=t.batch,
            status=t.status,
            reason=t.reason,
            items_per_s=t.items_per_s,
            reference_items_per_s=t.reference_items_per_s,
            ratio=t.speedup.estimate if t.speedup else None,
            ratio_low=t.speedup.low if t.speedup else None,
            ratio_high=t.speedup.high if t.speedup else None,
        )
        for t in (lat.throughput if lat else [])
    ]


def tuned_text(lat: LatencyRecord | None) -> str:
    """What the build's sweep of runtime settings adopted, in one line ("" without one)."""
    tuned = lat.tuning if lat else None
    if tuned is None:
        return ""
    if tuned.status == "skipped":
        return f"not tuned: {tuned.reason}"
    tried = [c for c in tuned.candidates if c.status != "baseline"]
    timed = sum(c.status == "measured" for c in tried)
    what = f"{timed} of {len(tried)} candidate(s) timed in {tuned.seconds:.1f} s"
    if tuned.others_cpus is not None:
        what += f", other work {tuned.others_cpus:g} of {tuned.cpus_watched} cpus"
    elif tuned.host_load is not None:
        what += f", load {tuned.host_load:g} on {tuned.host.cpu_count} cpus"
    chosen = next((c for c in tried if c.name == tuned.adopted), None)
    if chosen is None or chosen.speedup is None:
        why = tuned.reason or "no candidate faster beyond its interval"
        return f"defaults kept: {why} ({what})"
    return f"{chosen.name}: {chosen.speedup.describe()} over the defaults ({what})"


class ArtifactRow(_Row):
    """One artifact's line in `report.md`, `inspect` (and its --json) and the build summary."""

    id: str
    target: str
    backend: str
    precision: str
    status: str
    reason: str = ""
    install: str = ""
    parity: str
    parity_mode: str = ""  # native | cross-host | emulated | none
    parity_host: str = ""
    parity_reason: str = ""
    max_abs_err: float | None = None
    cosine: float | None = None
    top1: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    ref_p50_ms: float | None = None
    speedup: float | None = None
    speedup_low: float | None = None  # the interval that holds the true median speedup
    speedup_high: float | None = None
    # the task metric on the labelled samples (the decisive parity record's), and how large
    # the share of such inputs the artifact does worse on can be (95 %, core/task.py)
    task: TaskScore | None = None
    task_worse_bound: float | None = None

    @property
    def speedup_text(self) -> str:
        """`1.37x [1.31-1.44]`: the estimate and its spread, `-` when not measured."""
        if self.speedup is None:
            return "-"
        spread = (
            f" [{self.speedup_low:.2f}-{self.speedup_high:.2f}]"
            if self.speedup_low is not None and self.speedup_high is not None
            else ""
        )
        return f"{self.speedup:.2f}x{spread}"

    @property
    def task_paired_text(self) -> str:
        """`2 / 1`: samples on which the artifact's output alone lowers / raises the
        reference's task score (the paired check), `-` where it did not run."""
        t = self.task
        return f"{len(t.worse)} / {t.better}" if t is not None and t.worse is not None else "-"

    @property
    def task_bound_text(self) -> str:
        """`11.7%`: the 95 % bound on the share of inputs the artifact does worse on."""
        return f"{self.task_worse_bound:.1%}" if self.task_worse_bound is not None else "-"

    @property
    def task_why(self) -> str:
        """Why the task verdict is what it is, where a reason was recorded."""
        t = self.task
        return "; ".join(x for x in (t.reason, t.paired_reason) if x) if t is not None else ""

    latency_host: str = ""
    # the runtime settings the build's sweep adopted, and items/s by serving batch size
    tuned: str = ""
    throughput: list[BatchRow] = Field(default_factory=list)
    size_bytes: int = 0
    size: str = ""
    passes: list[PassStep] = Field(default_factory=list)
    compile_settings: dict[str, JsonValue] = Field(default_factory=dict)

    @property
    def recipe(self) -> str:
        """`simplify -> quantize(...) -> onnxruntime(...)`: how the artifact was made."""
        backend = ", ".join(f"{k}={short_value(v)}" for k, v in self.compile_settings.items())
        steps = [p.summary() for p in self.passes]
        return " -> ".join([*steps, f"{self.backend}({backend})" if backend else self.backend])


def describe_host(host: MeasuredOn | None) -> str:
    """`name (x86_64 AMD EPYC x2)`, with the emulator when there was one."""
    if host is None:
        return "?"
    what = f"{host.arch} {host.cpu_model} x{host.cpu_count}"
    if host.gpus:
        what += f", GPU {host.gpus[0].name}"
    if host.emulated:
        what += f", emulated: {host.emulated}"
    return f"{host.hostname} ({what})" if host.hostname else what


def short_value(value: Any) -> str:
    """A value for a one-line summary: floats to 4 digits, long lists cut."""
    if isinstance(value, list):
        shown = ", ".join(short_value(v) for v in value[:_SHOWN_ITEMS])
        more = f", +{len(value) - _SHOWN_ITEMS} more" if len(value) > _SHOWN_ITEMS else ""
        return f"[{shown}{more}]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _scalar(value: JsonValue) -> bool:
    if isinstance(value, list):
        return all(not isinstance(v, dict | list) for v in value)
    return not isinstance(value, dict) and not (isinstance(value, str) and len(value) > 80)


def _describes(section: dict[str, JsonValue]) -> bool:
    """A nested section worth a summary says something in words (calibration: method and
    source; nodes kept in float), unlike tables of counts (op histograms, graph facts)."""
    return any(
        isinstance(v, str) or (isinstance(v, list) and v and isinstance(v[0], str))
        for v in section.values()
    )


def _facts(details: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """A pass record's facts for a summary: its short values and lists, and those of its
    descriptive sections (`calibration.method`); the rest stays in the manifest's pass log."""
    out: dict[str, JsonValue] = {}
    for key, value in details.items():
        if isinstance(value, dict):
            if _describes(value):
                out.update({f"{key}.{k}": v for k, v in value.items() if _scalar(v)})
        elif _scalar(value):
            out[key] = value
    return out


def _flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, JsonValue]:
    """Non-default settings by dotted key (`accuracy_aware.enabled`)."""
    out: dict[str, JsonValue] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_settings(value, f"{name}."))
        else:
            out[name] = value
    return out


def _step(config: PassConfig, record: PassRecord | None) -> PassStep:
    settings = config.model_dump(mode="json", exclude_defaults=True, exclude={"name"})
    return PassStep(
        name=config.name,
        settings=_flatten_settings(settings),
        facts=_facts(record.details) if record else {},
        skipped=record.skipped if record else "",
    )


def _recipes(m: Manifest) -> dict[str, tuple[list[PassStep], dict[str, JsonValue]]]:
    """Artifact id -> (its pass steps, its non-default backend settings)."""
    try:
        config = BuildConfig.model_validate(m.provenance.config)
        g = build_graph(config, list(config.targets))
    except (ValidationError, KeyError, ValueError):  # a config from another version
        return {}
    recipes = {}
    for a in g.artifacts:
        chain: list[PassNode] = []
        nid = a.compile.source
        while nid != g.normalize.id:
            node = g.typed(nid, PassNode)
            chain.append(node)
            nid = node.source
        steps = [_step(n.config, m.build.pass_log.get(n.id)) for n in reversed(chain)]
        backend = a.config.compile.model_dump(
            mode="json", exclude_defaults=True, exclude={"backend"}
        )
        recipes[a.id] = (steps, _flatten_settings(backend))
    return recipes


def artifact_rows(m: Manifest) -> list[ArtifactRow]:
    recipes = _recipes(m)
    rows = []
    for a in m.artifacts:
        verdict, _ = parity_verdict(m, a.id)
        measured = m.measured(a.id)
        decisive = [r for r in measured.parity if r.decisive]
        shown = decisive[-1] if decisive else (measured.parity[-1] if measured.parity else None)
        timed = [r for r in measured.latency if r.artifact is not None]
        lat = timed[-1] if timed else None
        worst = _worst_output(m, a.id)
        size = sum(f.size for f in a.files)
        steps, backend = recipes.get(a.id, ([PassStep(name=p) for p in a.passes], {}))
        rows.append(
            ArtifactRow(
                id=a.id,
                target=a.target,
                backend=a.backend,
                precision=a.precision,
                status=a.status,
                reason=a.reason,
                install=a.install,
                parity=verdict if a.status in ("built", "deferred") else "-",
                parity_mode=shown.mode if shown else "",
                parity_host=describe_host(shown.host) if shown and shown.host else "",
                # why there is no verdict, or what decided one the outputs alone would not
                parity_reason=(shown.reason if not shown.decisive else shown.basis)
                if shown
                else "",
                max_abs_err=worst.max_abs_err if worst and not worst.error else None,
                cosine=worst.cosine if worst and not worst.error else None,
                top1=worst.top1_agreement if worst and not worst.error else None,
                p50_ms=lat.artifact.p50_ms if lat and lat.artifact else None,
                p99_ms=lat.artifact.p99_ms if lat and lat.artifact else None,
                ref_p50_ms=lat.reference.p50_ms if lat and lat.reference else None,
                speedup=lat.speedup_vs_reference if lat else None,
                speedup_low=lat.speedup.low if lat and lat.speedup else None,
                speedup_high=lat.speedup.high if lat and lat.speedup else None,
                task=shown.task if shown else None,
                task_worse_bound=_worse_bound(shown.task) if shown else None,
                latency_host=describe_host(lat.host) if lat else "",
                tuned=tuned_text(lat),
                throughput=_batch_rows(lat),
                size_bytes=size,
                size=human_bytes(size) if a.files else "-",
                passes=steps,
                compile_settings=backend,
            )
        )
    return rows


def _worse_bound(task: TaskScore | None) -> float | None:
    """The 95 % bound on the share of inputs the artifact does worse on, where the paired
    check ran (computed from its record: packages built before it was shown have it too)."""
    if task is None or task.worse is None or task.status == "not-run":
        return None
    return worse_bound(len(task.worse), task.samples)


def _worst_output(m: Manifest, aid: str) -> OutputParity | None:
    recs = [r for r in m.measured(aid).parity if r.outputs]
    if not recs:
        return None
    outs = recs[-1].outputs.values()
    # an output that could not be compared (a shape mismatch) is the worst, with no figures
    return next((o for o in outs if o.error), None) or max(outs, key=lambda o: o.max_abs_err)
