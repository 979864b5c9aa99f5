"""The coarse steps of the int8 accuracy loop, tried before single layers go back to float.

Giving layers back one at a time (passes/accuracy.py) repairs a model whose error comes from
a few compute layers. Two failures it cannot repair, seen on real models:

- The calibration method is wrong for the model's activations (min/max ranges stretched by
  outliers, or percentile ranges that clip what matters). The other methods are tried on
  the same calibration samples and the one the gate judges best is kept: each is one
  quantization, run only when the first fails the gate.
- The error is in the arithmetic between compute layers: a LayerNorm written out as
  E[x^2] - E[x]^2 (catastrophic cancellation in 8 bits), a hand-written softmax, a GELU
  polynomial. magika (tf2onnx) reads 7/24 files right with them int8 and 22/24 (the float
  model's score) with only its Conv and MatMuls int8. These ops cost little in float, so
  one step keeps all of them float before any compute layer is given back.

Both steps are judged by the same Gate as the per-layer loop, and the record says what each
step measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from passes.accuracy import Budget, Gate, GateResult, Quantize

__all__ = ["FLOAT_ARITHMETIC", "SearchResult", "arithmetic_nodes", "search_int8"]

# Ops whose int8 form saves little time and whose rounding compounds: elementwise and
# reduction arithmetic, normalizations, activations with curvature. Data movement (Reshape,
# Transpose, Concat, pooling, Relu/Clip) stays int8: keeping it float adds Q/DQ pairs.
FLOAT_ARITHMETIC = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
        "Erf",
        "Tanh",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Softmax",
        "LogSoftmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceL2",
        "LayerNormalization",
        "InstanceNormalization",
        "Where",
        "Max",
        "Min",
        "Gelu",
    }
)


def arithmetic_nodes(model: onnx.ModelProto, skip: Sequence[str] = ()) -> list[str]:
    """Names of the main graph's FLOAT_ARITHMETIC nodes, less `skip`."""
    skipped = set(skip)
    return [
        n.name
        for n in model.graph.node
        if n.op_type in FLOAT_ARITHMETIC and n.name and n.name not in skipped
    ]


@dataclass
class SearchResult:
    """The coarse step the loop continues from: which quantizer, its exclusions, its model
    and the gate's verdict on it; `record` says what every step measured."""

    method: str
    model: onnx.ModelProto
    result: GateResult
    exclude: list[str]
    record: dict[str, Any] = field(default_factory=dict)


def _margins(result: GateResult) -> dict[str, Any]:
    out: dict[str, Any] = {"passed": result.passed, "margin": round(result.margin, 6)}
    if result.task is not None and result.task.artifact is not None:
        out["task"] = round(result.task.artifact, 6)
    return out


def search_int8(
    float_model: onnx.ModelProto,
    quantizers: Mapping[str, Quantize],
    gate: Gate,
    exclude: Sequence[str],
    arithmetic_float: bool = True,
    first: tuple[onnx.ModelProto, GateResult] | None = None,
    budget: Budget | None = None,
) -> SearchResult:
    """The first of the quantizers (in order) whose model passes the gate, else the best by
    the gate; then, if that still fails, the same with the arithmetic ops float, kept when
    it passes or is closer to passing. `first`: the first quantizer's model and verdict,
    when the caller has them already. Unusable quantizers (a histogram method on samples
    of several shapes) raise ValueError and are recorded as skipped, as are the steps that
    would start once `budget` is spent (one quantizer always runs)."""
    base = list(exclude)
    names = list(quantizers)
    best: SearchResult | None = None
    tried: dict[str, Any] = {}
    for i, name in enumerate(names):
        if i == 0 and first is not None:
            model, result = first
        elif best is not None and budget is not None and budget.spent():
            tried[name] = {"skipped": "max_seconds spent"}
            continue
        else:
            try:
                model = quantizers[name](base, None)
            except ValueError as exc:
                tried[name] = {"skipped": str(exc)}
                continue
            result = gate.check(model)
        tried[name] = _margins(result)
        if best is None or result.better_than(best.result):
            best = SearchResult(name, model, result, base)
        if result.passed:
            break
    if best is None:
        raise ValueError(f"no quantizer could run: {tried}")
    best.record["quantizer"] = {"tried": tried, "chosen": best.method}
    if best.result.passed or not arithmetic_float:
        return best
    floated = arithmetic_nodes(float_model, base)
    if not floated:
        return best
    if budget is not None and budget.spent():
        best.record["arithmetic_float"] = {"skipped": "max_seconds spent"}
        return best
    trial_exclude = [*base, *floated]
    model = quantizers[best.method](trial_exclude, None)
    result = gate.check(model)
    step: dict[str, Any] = {"nodes": len(floated), **_margins(result)}
    if result.passed or result.better_than(best.result):
        step["kept"] = True
        best = SearchResult(best.method, model, result, trial_exclude, best.record)
    else:
        step["kept"] = False
    best.record["arithmetic_float"] = step
    return best
