"""Accuracy-aware int8: keep the layers that cost the most accuracy in float, until the
quantized model passes the int8 gate or the budget is spent.

The approach follows NNCF's `quantize_with_accuracy_control`: quantize everything, measure;
if the gate fails, rank layers by sensitivity and give layers back to float in ranked order,
re-measuring after each. Two choices differ from NNCF, for reasons:

- Sensitivity is measured in isolation: the model with *only* that layer quantized, against
  the float reference (L2 error relative to the output's RMS, over the ranking samples).
  NNCF reverts one quantizer group at a time from the fully quantized model; with ONNX
  Runtime's QDQ format a tensor's quantization is shared by its producer and consumers, so
  reverting one node alone often changes nothing and the ranking degenerates to ties. In
  isolation, both ends of an outlier-ridden tensor rank high.
- The gate is the package's own verdict: compiler.core.parity judging each output by its
  kind with the build's int8 tolerances (per output where the config sets them), against the
  same reference the package reports against, and, when the build names a task metric and
  the samples have labels, the task score on those samples within `max_drop` of the
  reference's (as Olive's and NNCF's validation functions).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from compiler.core.parity import IndexScores, OutputParity, compare_outputs, margin
from compiler.core.task import TaskMetric, TaskScore, load_callable, score_task, verdict
from compiler.core.tolerance import DEFAULT_TOLERANCES, TaskSpec, Tolerance
from passes.base import PassContext
from passes.calibration_store import shared_json
from passes.ort_tools import run_model

__all__ = [
    "AUTO_OFF",
    "AccuracyAwareConfig",
    "Budget",
    "Gate",
    "GateResult",
    "Gates",
    "Quantize",
    "Ranker",
    "TaskGate",
    "gate_references",
    "gate_tolerance",
    "keep_sensitive_layers_in_float",
    "make_gates",
    "search_share",
    "shared_ranker",
]

Feeds = Sequence[dict[str, np.ndarray]]
Outputs = list[dict[str, np.ndarray]]
# quantize(exclude=[...], only=[...] or None) -> quantized model
Quantize = Callable[[list[str], list[str] | None], onnx.ModelProto]
# candidate layers (name, op type) -> (name, op type, isolated error), most costly first
Ranker = Callable[[list[tuple[str, str]]], list[tuple[str, str, float]]]


AUTO_OFF = (
    "accuracy-aware search off: the calibration data is generated, so no gate verdict on it "
    "means anything; give real data (--calibration-data, --sample-data) to turn it on"
)


class AccuracyAwareConfig(BaseModel):
    """`accuracy_aware:` block of the quantize pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool | Literal["auto"] = Field(
        default=False, description="auto: on when the calibration data is the user's"
    )
    max_float_layers: int = Field(default=8, ge=1, description="budget: layers kept in float")
    ranking_samples: int = Field(default=8, ge=1, description="samples for sensitivity ranking")
    # recurrent ops too: dynamic int8 quantizes an LSTM's input with one scale for the
    # whole tensor, and the first LSTM over a log-mel input can lose the model's accuracy
    # alone (voice_encoder: row cosine 0.84 int8, 0.999 with its first LSTM in float)
    candidate_op_types: tuple[str, ...] = (
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "Attention",
        "LSTM",
        "GRU",
        "RNN",
    )
    min_cosine: float | None = Field(
        default=None, ge=-1, le=1, description="None: the build's int8 parity tolerance"
    )
    min_top1: float | None = Field(
        default=None, ge=0, le=1, description="None: the build's int8 parity tolerance"
    )
    # The coarse steps before single layers (passes/int8_search.py):
    calibration_methods: tuple[Literal["minmax", "entropy", "percentile"], ...] = Field(
        # not entropy by default: ONNX Runtime 1.32's quantize_static cannot set its bins, and
        # with its 128/128 default the ranges equal minmax (magika, ppocr_det, measured)
        default=("percentile",),
        description="static int8: methods tried after the pass's own when its model fails",
    )
    arithmetic_float: bool = Field(
        default=True, description="try elementwise/normalization arithmetic in float first"
    )
    ceiling_after: int | None = Field(
        default=3,
        ge=1,
        description="steps after which the loop checks once that it can pass at all (every "
        "layer it may still give back in float, in float) and stops when not; null: never",
    )
    # layout_cdla (YOLO-like, SiLU): ONNX Runtime int8 ran 1.38-1.41x its float model on one
    # thread, 1.13-1.16x with the arithmetic (Sigmoid/Mul) float, and the search went on for
    # 120 s to an artifact served at 0.96x the reference (two threads) that failed anyway
    # (2026-12-05, AVX-512 VNNI EPYC). One thread's gain shrinks on two: hence 1.2, not 1.
    min_speedup: float | None = Field(
        default=1.2,
        gt=0,
        description="the search starts, and goes on past its coarse steps, only while its "
        "int8 model runs at least this many times faster than the float model on this host, "
        "on one thread (giving layers back to float only slows it further); checked where the "
        "target is this host's architecture and its int8 kernels run natively; null: never",
    )
    max_seconds: float | None = Field(
        default=600.0,
        gt=0,
        description="wall-clock cap on the search after the plain model's check: no step "
        "starts after it (a ranking under way finishes); null: none. Where it stops the "
        "search, the result depends on the host's speed, and the record says so",
    )


def gate_tolerance(
    ctx: PassContext, min_cosine: float | None, min_top1: float | None, precision: str = "int8"
) -> Callable[[str], Tolerance]:
    """Output name -> the build's tolerance for `precision` (the output's own where the config
    sets one), with a pass's `min_cosine`/`min_top1` overriding it."""
    base = ctx.tolerances.get(precision, DEFAULT_TOLERANCES[precision])
    overrides = {
        k: v for k, v in (("min_cosine", min_cosine), ("min_top1", min_top1)) if v is not None
    }

    def tolerance(name: str) -> Tolerance:
        tol = ctx.output_tolerances.get(name, {}).get(precision) or base
        return dataclasses.replace(tol, **overrides)

    return tolerance


def gate_references(
    model: onnx.ModelProto,
    feeds: Feeds,
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None,
) -> Outputs:
    """What an int8 gate compares against: the package's reference (PassContext.reference)
    when the DAG gives one, else the pass's float input on ONNX Runtime."""
    if reference is not None:
        return [reference(f) for f in feeds]
    return run_model(model, feeds)


@dataclass(frozen=True)
class TaskGate:
    """The build's task metric with the labels of the samples the gate runs on."""

    spec: TaskSpec
    metric: TaskMetric
    labels: list[Any]


@dataclass(frozen=True)
class GateResult:
    """One gate verdict: per output (the record's summary), the task score, and the margin
    (>= 0 exactly when it passes; the least of the outputs' and the task's)."""

    passed: bool
    outputs: dict[str, dict[str, Any]]
    task: TaskScore | None
    margin: float
    mean_margin: float
    error: float  # mean L2 error of the outputs: breaks ties of discrete margins (top-1, task)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"passed": self.passed, "outputs": self.outputs}
        if self.task is not None:
            out["task"] = dataclasses.asdict(self.task)
        return out

    def better_than(self, other: GateResult) -> bool:
        """Closer to passing: by the worst margin, the mean margin, then a lower error (a
        top-1 fraction or a task score may not move until several layers are float)."""
        mine = (self.margin, self.mean_margin, -self.error)
        return mine > (other.margin, other.mean_margin, -other.error)


class Gate:
    """The int8 gate: compiler.core.parity's verdict per output over a set of samples, and
    the task score on them when a TaskGate is given. Both int8 passes judge with it
    (quantize's accuracy-aware loop, nncf's accuracy control)."""

    def __init__(
        self,
        tolerance: Callable[[str], Tolerance] | Tolerance,
        feeds: Feeds,
        references: Outputs,
        kinds: Mapping[str, str | None] | None = None,
        task: TaskGate | None = None,
        precision: str = "int8",
    ) -> None:
        fixed = tolerance if isinstance(tolerance, Tolerance) else None
        self.tolerance: Callable[[str], Tolerance] = (
            (lambda _name: fixed) if fixed is not None else tolerance  # type: ignore[assignment]
        )
        self.feeds = list(feeds)
        self.references = references
        self.kinds = dict(kinds or {})
        self.task = task
        self.precision = precision  # the verdict's rule for this precision decides
        self.note = ""  # why the task is not scored, when the build names one
        self.data_sized: set[str] = set()  # outputs whose size depends on the data
        # the reference's scores behind index outputs, per feed (as `references`), or None
        self.scores: list[dict[str, IndexScores]] | None = None

    def judge(
        self, outputs: Sequence[Mapping[str, np.ndarray]], indices: Sequence[int] | None = None
    ) -> GateResult:
        """The gate's verdict on outputs of `self.feeds` (of the feeds at `indices`)."""
        at = list(range(len(self.feeds))) if indices is None else list(indices)
        refs = [self.references[i] for i in at]
        scores = [self.scores[i] for i in at] if self.scores is not None else None
        ok, per_output = compare_outputs(outputs, refs, self.tolerance, self.kinds, scores)
        margins = [margin(m) for m in per_output.values()]
        task = None
        if self.task is not None:
            labels = [self.task.labels[i] for i in at]
            task = score_task(self.task.spec, outputs, refs, labels, self.task.metric)
            # the verdict's own rule: a passing task decides where it is scored on enough
            # samples, and the outputs' closeness then only guards against a gross departure
            ok, basis = verdict(per_output, task, self.precision, self.data_sized)
            if basis:
                margins = [1.0]
            if task.drop is not None:  # losses that gains offset still count (core/task.py)
                drop = task.drop if task.loss_drop is None else max(task.drop, task.loss_drop)
                margins.append(self.task.spec.max_drop - drop)
            elif task.status == "failed":
                margins.append(-1.0)
        summary = {name: _summary(m) for name, m in per_output.items()}
        error = _error(outputs, refs, self.tolerance)
        return GateResult(ok, summary, task, min(margins), float(np.mean(margins)), error)

    def check(self, model: onnx.ModelProto) -> GateResult:
        return self.judge(run_model(model, self.feeds))

    def margin(self, outputs: Sequence[Mapping[str, np.ndarray]], references: Outputs) -> float:
        """The worst output's margin of `outputs` against `references` (>= 0: passes), for
        searches that need a metric per sample; the task is not scored here."""
        scores = self.scores if references is self.references else None
        _, per_output = compare_outputs(outputs, references, self.tolerance, self.kinds, scores)
        return min(margin(m) for m in per_output.values())


def search_share(labelled: int) -> int:
    """How many of the labelled samples (the first) an int8 search chooses on: half, rounded
    up (the others where the unchanged model passes on these: Gates.first_check). The
    verdict judges all of them, so the half the search never saw can show the losses
    of a model fitted to the other half (layout_cdla: NNCF's accuracy control passed an int8
    model on the 8 pages it chose on that drew a stray box more on held-out pages)."""
    return max(1, math.ceil(labelled / 2))


@dataclass(frozen=True)
class Budget:
    """A search's wall-clock cap (`max_seconds` of the accuracy loops): `seconds` from when
    it was made, None for none. Steps check it before they start, so a step under way ends."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.start > self.seconds

    def stopped(self, what: str) -> str:
        """The record's line for a search this budget stopped: `what` it had then."""
        took = time.monotonic() - self.start
        return (
            f"stopped after {took:.0f} s, over max_seconds {self.seconds:g}, {what}; the "
            "result depends on this host's speed: raise max_seconds (null: no cap)"
        )


@dataclass(frozen=True)
class FirstCheck:
    """The unchanged model's check (Gates.first_check): its verdict on every labelled sample,
    and the gate a search would choose on with the model's result there."""

    whole: GateResult  # the verdict's own check, on every sample
    gate: Gate  # the half a search chooses on
    result: GateResult  # the unchanged model on that half
    chosen: str = ""  # why that half, where it is not the first
    blind: str = ""  # why no search can help, where none can (it passes on both halves)


@dataclass(frozen=True)
class SpeedFloor:
    """`AccuracyAwareConfig.min_speedup` where it applies: `measure(model)` -> (how many
    times faster than the float model it runs on this host, pairs of blocks timed)."""

    minimum: float
    measure: Callable[[onnx.ModelProto], tuple[float, int]]

    def below(self, model: onnx.ModelProto, what: str) -> dict[str, Any] | None:
        """The record of a search this floor stops at `model` (`what` it is), None where
        `model` runs fast enough to search on."""
        ratio, pairs = self.measure(model)
        if ratio >= self.minimum:
            return None
        return {
            "speedup": round(ratio, 3),
            "pairs": pairs,
            "stopped": (
                f"{what} runs {ratio:.2f}x its float model on this host (ONNX Runtime, one "
                f"thread, median of {pairs} interleaved pairs), under min_speedup "
                f"{self.minimum:g}: giving layers back to float would only slow it further, "
                "so the search stopped there; the artifact is judged as it is"
            ),
        }


@dataclass(frozen=True)
class Gates:
    """One gate on every labelled sample and on its two halves. `whole`: every labelled
    sample, the verdict's own; the unchanged model (plain int8, bf16 throughout) is judged
    there, which fits nothing, so a search starts exactly when the verdict would fail it.
    `search`: the first `search_share` of them, what a search chooses its changes on, the
    rest held out for the verdict; `rest`: those others, where the search chooses instead
    when the unchanged model passes on the first half and fails on the rest (the verdict then
    holds out the first half). Without labelled samples and a task all are the one gate on
    the pass's feeds and `rest` is None."""

    whole: Gate
    search: Gate
    rest: Gate | None = None

    def first_check(self, model: onnx.ModelProto) -> FirstCheck:
        """The unchanged model's verdict on `whole` and on the half a search would choose on
        (the first where it fails there, or where it passes the whole), from one run."""
        return self.check_outputs(run_model(model, self.whole.feeds))

    def check_outputs(self, outputs: Sequence[Mapping[str, np.ndarray]]) -> FirstCheck:
        """`first_check` on the unchanged build's outputs on `whole`'s feeds, where the
        build is not an ONNX model (an OpenVINO bf16 IR: targets/base.py `Judge.share`)."""
        whole = self.whole.judge(outputs)
        n, total = len(self.search.feeds), len(self.whole.feeds)
        first = self.search.judge(outputs[:n])
        if whole.passed or not first.passed:
            return FirstCheck(whole, self.search, first)
        if self.rest is not None:
            rest = self.rest.judge(outputs[n:])
            if not rest.passed:
                chosen = (
                    f"fails on all {total} labelled samples and on the last {total - n} but "
                    f"passes on the first {n}: the search chose on the last {total - n}, the "
                    f"first {n} held out for the verdict"
                )
                return FirstCheck(whole, self.rest, rest, chosen=chosen)
        halves = f"on the first {n}" + ("" if self.rest is None else f" and the last {total - n}")
        blind = (
            f"fails on all {total} labelled samples but passes {halves} a search chooses on: "
            "nothing to choose by, so no search ran; the verdict judges it as it is"
        )
        return FirstCheck(whole, self.search, first, blind=blind)

    def unchanged(self, check: FirstCheck) -> dict[str, Any]:
        """The record of a search that did not run: the model passes, or no search can help
        it (`check.blind`)."""
        record: dict[str, Any] = {"gate_before": check.whole.record(), "kept_in_float": []}
        if self.whole.note:
            record["note"] = self.whole.note
        if check.blind:
            record["unsearched"] = check.blind
        return record


def make_gates(
    model: onnx.ModelProto,
    ctx: PassContext,
    calibration: Feeds,
    min_cosine: float | None = None,
    min_top1: float | None = None,
    precision: str = "int8",
) -> Gates:
    """The gates of `precision` a pass judges its result by: on the labelled parity samples
    with the task metric when the build names one and the samples have labels (the search's
    on their first `search_share`), else one gate on `calibration`."""
    tolerance = gate_tolerance(ctx, min_cosine, min_top1, precision)
    kinds = {o.name: o.kind for o in ctx.contract.outputs}
    feeds, labels, note = list(calibration), None, ""
    if ctx.task is not None:
        samples, given = ctx.validation(), ctx.labels()
        if given is None or len(given) != len(samples) or not samples:
            note = "task metric not scored: the samples have no labels (labels.json)"
        else:
            feeds, labels = list(samples), list(given)
    references = gate_references(model, feeds, ctx.reference)
    scores = None
    if ctx.reference is not None and ctx.reference_scores is not None:
        scores = ctx.reference_scores(feeds)

    def gate(at: slice) -> Gate:
        task = None
        if ctx.task is not None and labels is not None:
            task = TaskGate(ctx.task, load_callable(ctx.task.metric), labels[at])
        made = Gate(tolerance, feeds[at], references[at], kinds, task, precision)
        made.note = note
        made.data_sized = ctx.contract.data_sized_outputs()
        made.scores = scores[at] if scores is not None else None
        return made

    if labels is None:
        one = gate(slice(None))
        return Gates(one, one)
    n = search_share(len(feeds))
    rest = gate(slice(n, None)) if n < len(feeds) else None
    return Gates(gate(slice(None)), gate(slice(n)), rest)


def _summary(m: OutputParity) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": m.kind, "cosine": round(m.cosine, 6)}
    out.update({c.metric: round(c.value, 6) for c in m.checks})
    out["failures"] = list(m.failures)
    return out


def _error(
    outputs: Sequence[Mapping[str, np.ndarray]],
    references: Sequence[Mapping[str, np.ndarray]],
    tolerance: Callable[[str], Tolerance],
) -> float:
    """Mean over outputs of the L2 error relative to the reference's RMS (floored at the
    tolerance's atol, so a near-zero output does not rank on noise): the ranking metric, and
    the gate's tie-breaker. An output that is not float, or not of the reference's shape in
    every sample, counts 0."""
    return _sums_error(_square_sums(outputs, references), tolerance)


def candidate_layers(
    model: onnx.ModelProto, op_types: Sequence[str], exclude: Sequence[str]
) -> list[tuple[str, str]]:
    """(name, op_type) of the float model's nodes the loop may keep in float."""
    wanted, skip = set(op_types), set(exclude)
    return [
        (n.name, n.op_type)
        for n in model.graph.node
        if n.op_type in wanted and n.name and n.name not in skip
    ]


# Ranking in two rounds (successive halving): every candidate on the first half of the
# ranking samples, then the `_FINALISTS` most costly of them on the other half too, their
# error then on all of them (the squared sums add up across rounds: exactly the one-round
# figure). The loop tries at most 2 * max_float_layers (16 by default) of the ranked layers,
# so the rest need only be known to rank below those. On the per-sample isolated errors of
# every candidate (minmax; layout_cdla 102 Convs on 8 gate samples, ppocr_det 64 on 4,
# ppocr_rec 51 on 8; 2026-12-01) the top 16 and their order were those of ranking all on all
# with 1, 2 or 4 first-round samples and 32 or 48 finalists (24 lost one of ppocr_rec's). A
# first round of 2 samples of 8 lost a leader of a chaotic deep Tanh chain whose layers cost
# a lot on some samples and nothing on others (tests/passes/test_accuracy.py); half did not.
# layout_cdla's ranking: 816 -> 536 inferences.
_FINALISTS = 32

# output name -> (sum of squared errors, sum of squared reference values, elements, whether
# the output is compared: float and of the reference's shape in every sample, as `_error`)
_Sums = dict[str, tuple[float, float, int, bool]]


def rank_layers(
    candidates: list[tuple[str, str]], quantize: Quantize, gate: Gate, samples: int
) -> list[tuple[str, str, float]]:
    """Candidates by isolated sensitivity (the `_error` of the model with only that layer
    quantized) on the gate's first `samples` feeds, most costly first (ties by name,
    deterministic). Beyond `_FINALISTS` candidates, in two rounds: the finalists are ranked
    on all the samples, the others follow with their first-round error."""
    feeds, refs = gate.feeds[:samples], gate.references[:samples]
    first = math.ceil(len(feeds) / 2)
    rounds = len(candidates) > _FINALISTS and first < len(feeds)
    heat = len(feeds) if not rounds else first
    sums = {
        name: _square_sums(run_model(quantize([], [name]), feeds[:heat]), refs[:heat])
        for name, _ in candidates
    }
    ranked = _by_error(candidates, sums, gate.tolerance)
    if not rounds:
        return ranked
    finalists = [(name, op_type) for name, op_type, _ in ranked[:_FINALISTS]]
    for name, _ in finalists:
        more = _square_sums(run_model(quantize([], [name]), feeds[heat:]), refs[heat:])
        sums[name] = _add(sums[name], more)
    return _by_error(finalists, sums, gate.tolerance) + ranked[_FINALISTS:]


def _square_sums(
    outputs: Sequence[Mapping[str, np.ndarray]], references: Sequence[Mapping[str, np.ndarray]]
) -> _Sums:
    sums: _Sums = {}
    for name in references[0]:
        o = [np.asarray(out[name]) for out in outputs]
        r = [np.asarray(ref[name]) for ref in references]
        if any(a.shape != x.shape for a, x in zip(o, r, strict=True)) or (
            r and r[0].dtype.kind not in "fc"
        ):
            sums[name] = (0.0, 0.0, 0, False)
            continue
        sse = sum(
            float(np.square(a.astype(np.float64) - x).sum()) for a, x in zip(o, r, strict=True)
        )
        ssr = sum(float(np.square(x.astype(np.float64)).sum()) for x in r)
        sums[name] = (sse, ssr, sum(x.size for x in r), True)
    return sums


def _add(a: _Sums, b: _Sums) -> _Sums:
    return {
        k: (a[k][0] + b[k][0], a[k][1] + b[k][1], a[k][2] + b[k][2], a[k][3] and b[k][3]) for k in a
    }


def _sums_error(per_output: _Sums, tolerance: Callable[[str], Tolerance]) -> float:
    """`_error` from the outputs' squared sums."""
    errs = [
        math.sqrt(sse / n) / max(math.sqrt(ssr / n), tolerance(name).atol or 0.0, 1e-30)
        if compared and n
        else 0.0
        for name, (sse, ssr, n, compared) in per_output.items()
    ]
    return float(np.mean(errs))


def _by_error(
    candidates: list[tuple[str, str]],
    sums: Mapping[str, _Sums],
    tolerance: Callable[[str], Tolerance],
) -> list[tuple[str, str, float]]:
    """`candidates` with their `_error` made from `sums`, most costly first, ties by name."""
    scored = [(name, op_type, _sums_error(sums[name], tolerance)) for name, op_type in candidates]
    return sorted(scored, key=lambda s: (-s[2], s[0]))


def shared_ranker(
    quantize: Quantize,
    gate: Gate,
    samples: int,
    store: Path | None,
    model: onnx.ModelProto,
    settings: Mapping[str, Any],
) -> Ranker:
    """`rank_layers` with `quantize`, its result shared between the build's nodes through
    `store` (passes/calibration_store.py) by a digest of what decides it: the float model,
    the ranking samples and their references, the tolerances' floors, the candidates and
    `settings` (what reaches the quantizer)."""

    def rank(candidates: list[tuple[str, str]]) -> list[tuple[str, str, float]]:
        def compute() -> list[list[Any]]:
            return [list(r) for r in rank_layers(candidates, quantize, gate, samples)]

        h = hashlib.sha256()
        try:
            h.update(model.SerializeToString(deterministic=True))
        except ValueError:  # over protobuf's 2 GB: rank here, unshared
            return rank_layers(candidates, quantize, gate, samples)
        for outputs in (*gate.feeds[:samples], *gate.references[:samples]):
            for name in sorted(outputs):
                a = np.ascontiguousarray(outputs[name])
                h.update(f"{name}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
        floors = {n: gate.tolerance(n).atol for n in gate.references[0]} if samples else {}
        h.update(repr((sorted(settings.items()), candidates, samples, floors)).encode())
        ranked = shared_json(store, f"int8-ranking-{h.hexdigest()}", compute)
        return [(str(n), str(t), float(e)) for n, t, e in ranked]

    return rank


def keep_sensitive_layers_in_float(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    quantize: Quantize,
    gate: Gate,
    base_exclude: list[str],
    cfg: AccuracyAwareConfig,
    before: GateResult | None = None,
    ranker: Ranker | None = None,
    budget: Budget | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return the first model in the loop that passes the gate, else the best one kept.

    A layer whose float copy does not improve the gate is left int8 and listed as rejected;
    at most 2 * max_float_layers layers are tried. `before`: the gate's verdict on
    `quantized`, when the caller has it. `ranker`: how candidates are ranked (default:
    `rank_layers` with `quantize` on `cfg.ranking_samples`). `budget`: the search's time cap
    (default: `cfg.max_seconds` from now)."""
    budget = budget if budget is not None else Budget(cfg.max_seconds)
    before = before if before is not None else gate.check(quantized)
    record: dict[str, Any] = {"gate_before": before.record()}
    if gate.note:
        record["note"] = gate.note
    if before.passed:
        record["kept_in_float"] = []
        return quantized, record
    if budget.spent():
        record["kept_in_float"] = []
        record["gate_after"] = before.record()
        record["budget_spent"] = budget.stopped("before ranking layers, still failing")
        return quantized, record
    candidates = candidate_layers(float_model, cfg.candidate_op_types, base_exclude)
    ranked = (
        ranker(candidates)
        if ranker is not None
        else rank_layers(candidates, quantize, gate, cfg.ranking_samples)
    )
    record["ranking"] = [
        {"layer": n, "op_type": t, "isolated_error": round(e, 8)} for n, t, e in ranked[:20]
    ]
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    model = quantized
    tries = ranked[: 2 * cfg.max_float_layers]
    out_of_time = False
    for rank, (name, op_type, err) in enumerate(tries, 1):
        if len(kept) >= cfg.max_float_layers:
            break
        if budget.spent():
            out_of_time = True
            break
        if rank - 1 == cfg.ceiling_after and rank < len(tries):
            rest = [n for n, _, _ in tries[rank - 1 :]]
            record["ceiling"] = _ceiling(quantize, gate, base_exclude, kept, rest)
            if not record["ceiling"]["passed"]:
                break
        trial = quantize([*base_exclude, *(k["layer"] for k in kept), name], None)
        after = gate.check(trial)
        step = {
            "layer": name,
            "op_type": op_type,
            "gate_before": before.record(),
            "gate_after": after.record(),
        }
        if not after.passed and not after.better_than(before):
            # float here did not help (QDQ placement shifted error elsewhere): leave it int8
            rejected.append({**step, "why": "keeping it in float did not improve the gate"})
            continue
        why = f"isolated int8 error {err:.3g} (L2, relative to the output's scale), rank {rank}"
        kept.append({**step, "why": why})
        model, before = trial, after
        if after.passed:
            break
    record["rejected"] = rejected
    record["kept_in_float"] = kept
    record["gate_after"] = before.record()
    ceiling = record.get("ceiling")
    if not before.passed and out_of_time:
        record["budget_spent"] = budget.stopped(
            f"with {len(kept)} layers kept in float, still failing"
        )
    elif not before.passed and ceiling is not None and not ceiling["passed"]:
        record["budget_spent"] = (
            f"still failing after keeping {len(kept)} layers in float, and stopped: with "
            f"those and the {ceiling['untried']} ranked layers it had yet to try in float, "
            f"the gate fails too (margin {ceiling['margin']:.3g}); raise max_float_layers "
            "(the loop then tries more layers), exclude_nodes, or drop the int8 variant"
        )
    elif not before.passed:
        record["budget_spent"] = (
            f"still failing after keeping {len(kept)} layers in float "
            f"(max_float_layers={cfg.max_float_layers}); raise it or drop the int8 variant"
        )
    return model, record


def _ceiling(
    quantize: Quantize,
    gate: Gate,
    base_exclude: list[str],
    kept: list[dict[str, Any]],
    rest: list[str],
) -> dict[str, Any]:
    """The gate on the most the per-layer loop can still reach: the exclusions, the layers
    `kept` and every ranked layer it has yet to try, `rest`, in float. A
    superset of any model the remaining steps make, so where it fails they almost surely
    fail too (QDQ placement makes float-ness not strictly monotone; the record says what
    was measured). On real models the loop's failing runs tried all 16 steps (basic_pitch:
    16 of 16 rejected; ppocr_det, layout_cdla: 4-8 kept, still failing), and its passing
    runs passed within 3 steps (voice_encoder, the outlier models): the check costs one
    step where the loop passes later, and saves up to 12 where it cannot pass."""
    result = gate.check(quantize([*base_exclude, *(k["layer"] for k in kept), *rest], None))
    out: dict[str, Any] = {"kept": len(kept), "untried": len(rest), "passed": result.passed}
    out["margin"] = round(result.margin, 6)
    if result.task is not None and result.task.artifact is not None:
        out["task"] = round(result.task.artifact, 6)
    return out
