"""Accuracy-aware int8: keep the layers that cost the most accuracy in float, until the
quantized model passes the int8 parity gate or the budget is spent.

The approach follows NNCF's `quantize_with_accuracy_control`: quantize everything, measure;
if the gate fails, rank layers by sensitivity and give layers back to float in ranked order,
re-measuring after each. Two choices differ from NNCF, for reasons:

- Sensitivity is measured in isolation: the model with *only* that layer quantized, against
  the float reference (1 - cosine over the ranking samples). NNCF reverts one quantizer
  group at a time from the fully quantized model; with ONNX Runtime's QDQ format a tensor's
  quantization is shared by its producer and consumers, so reverting one node alone often
  changes nothing and the ranking degenerates to ties. In isolation, both ends of an
  outlier-ridden tensor rank high.
- The gate is the package's own parity gate (compiler.core.parity, per-precision tolerances),
  measured against the same reference the package reports against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from compiler.core.parity import OutputParity, compare_outputs, output_metrics
from compiler.core.tolerance import DEFAULT_TOLERANCES, Tolerance
from passes.ort_tools import run_model

__all__ = [
    "AccuracyAwareConfig",
    "Gate",
    "gate_references",
    "gate_tolerance",
    "keep_sensitive_layers_in_float",
    "output_margin",
]

Feeds = Sequence[dict[str, np.ndarray]]
Outputs = list[dict[str, np.ndarray]]
# quantize(exclude=[...], only=[...] or None) -> quantized model
Quantize = Callable[[list[str], list[str] | None], onnx.ModelProto]


class AccuracyAwareConfig(BaseModel):
    """`accuracy_aware:` block of the quantize pass."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = False
    max_float_layers: int = Field(default=8, ge=1, description="budget: layers kept in float")
    ranking_samples: int = Field(default=8, ge=1, description="samples for sensitivity ranking")
    candidate_op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    min_cosine: float | None = Field(
        default=None, ge=-1, le=1, description="None: the build's int8 parity tolerance"
    )
    min_top1: float | None = Field(
        default=None, ge=0, le=1, description="None: the build's int8 parity tolerance"
    )


def gate_tolerance(
    tolerances: Mapping[str, Tolerance], min_cosine: float | None, min_top1: float | None
) -> Tolerance:
    """The build's int8 tolerance, with a pass's `min_cosine`/`min_top1` overriding it."""
    tol = tolerances.get("int8", DEFAULT_TOLERANCES["int8"])
    overrides = {
        k: v for k, v in (("min_cosine", min_cosine), ("min_top1", min_top1)) if v is not None
    }
    return dataclasses.replace(tol, **overrides)


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


def output_margin(m: OutputParity, tol: Tolerance) -> float:
    """How far one output lies inside `tol` (negative: outside), >= 0 exactly when
    compiler.core.parity.judge passes it: the least of the cosine and top-1 margins and, where
    the tolerance bounds it, the max abs error's margin relative to its bound."""
    if m.error or not m.finite:
        return -1.0
    terms = [m.cosine - tol.min_cosine]
    if m.top1_agreement is not None:
        terms.append(m.top1_agreement - tol.min_top1)
    if tol.atol is not None:
        bound = tol.atol + tol.rtol * m.ref_max_abs
        if bound > 0:
            terms.append((bound - m.max_abs_err) / bound)
        else:
            terms.append(0.0 if m.max_abs_err == 0 else -1.0)
    return min(terms)


class Gate:
    """The int8 parity gate: compiler.core.parity's metrics and verdicts over a set of samples.

    Both int8 passes judge with it (quantize's accuracy-aware loop, nncf's accuracy control).
    """

    def __init__(self, tolerance: Tolerance, feeds: Feeds, references: Outputs) -> None:
        self.tolerance = tolerance
        self.feeds = list(feeds)
        self.references = references

    def check(self, model: onnx.ModelProto) -> tuple[bool, dict[str, Any]]:
        outputs = run_model(model, self.feeds)
        ok, per_output = compare_outputs(outputs, self.references, lambda _name: self.tolerance)
        return ok, {name: _summary(m) for name, m in per_output.items()}

    def margin(self, outputs: Sequence[Mapping[str, np.ndarray]], references: Outputs) -> float:
        """The worst output's `output_margin` of `outputs` against `references`: the gate's
        verdict as a number (>= 0: passes), for searches that need a metric."""
        _, per_output = compare_outputs(outputs, references, lambda _name: self.tolerance)
        return min(output_margin(m, self.tolerance) for m in per_output.values())


def _summary(m: OutputParity) -> dict[str, Any]:
    out: dict[str, Any] = {"cosine": round(m.cosine, 6), "max_abs_err": round(m.max_abs_err, 6)}
    if m.top1_agreement is not None:
        out["top1_agreement"] = round(m.top1_agreement, 6)
    out["failures"] = list(m.failures)
    return out


def _error(outputs: Outputs, references: Outputs) -> float:
    """Mean over outputs of 1 - cosine: the ranking metric (not the gate)."""
    errs = []
    for name in references[0]:
        m = output_metrics([o[name] for o in outputs], [r[name] for r in references])
        errs.append(1.0 - m.cosine)
    return float(np.mean(errs))


def _score(outputs: dict[str, Any], tol: Any) -> tuple[float, float]:
    """How close a gate result is to passing: the worst output's margin to the tolerance
    (cosine and top-1), then the mean cosine to break ties."""
    margins = [
        min(m.get("cosine", 0.0) - tol.min_cosine, m.get("top1_agreement", 1.0) - tol.min_top1)
        for m in outputs.values()
    ]
    cosines = [m.get("cosine", 0.0) for m in outputs.values()]
    return min(margins), float(np.mean(cosines))


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


def rank_layers(
    candidates: list[tuple[str, str]], quantize: Quantize, feeds: Feeds, references: Outputs
) -> list[tuple[str, str, float]]:
    """Candidates by isolated sensitivity, most costly first (ties by name, deterministic)."""
    scored = []
    for name, op_type in candidates:
        alone = quantize([], [name])
        scored.append((name, op_type, _error(run_model(alone, feeds), references)))
    return sorted(scored, key=lambda s: (-s[2], s[0]))


def keep_sensitive_layers_in_float(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    quantize: Quantize,
    gate: Gate,
    base_exclude: list[str],
    cfg: AccuracyAwareConfig,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Return the first model in the loop that passes the gate, else the best one kept.

    A layer whose float copy does not improve the gate is left int8 and listed as rejected;
    at most 2 * max_float_layers layers are tried."""
    ok, metrics = gate.check(quantized)
    record: dict[str, Any] = {"gate_before": {"passed": ok, "outputs": metrics}}
    if ok:
        record["kept_in_float"] = []
        return quantized, record
    candidates = candidate_layers(float_model, cfg.candidate_op_types, base_exclude)
    rank_feeds = gate.feeds[: cfg.ranking_samples]
    ranked = rank_layers(candidates, quantize, rank_feeds, gate.references[: len(rank_feeds)])
    record["ranking"] = [
        {"layer": n, "op_type": t, "isolated_error": round(e, 8)} for n, t, e in ranked[:20]
    ]
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    model, before = quantized, metrics
    for rank, (name, op_type, err) in enumerate(ranked[: 2 * cfg.max_float_layers], 1):
        if len(kept) >= cfg.max_float_layers:
            break
        trial = quantize([*base_exclude, *(k["layer"] for k in kept), name], None)
        ok, after = gate.check(trial)
        step = {"layer": name, "op_type": op_type, "gate_before": before, "gate_after": after}
        if not ok and _score(after, gate.tolerance) <= _score(before, gate.tolerance):
            # float here did not help (QDQ placement shifted error elsewhere): leave it int8
            rejected.append({**step, "why": "keeping it in float did not improve the gate"})
            continue
        kept.append({**step, "why": f"isolated int8 error {err:.3g} (1 - cosine), rank {rank}"})
        model, before = trial, after
        if ok:
            break
    record["rejected"] = rejected
    record["kept_in_float"] = kept
    record["gate_after"] = {"passed": ok, "outputs": before}
    if not ok:
        record["budget_spent"] = (
            f"still failing after keeping {len(kept)} layers in float "
            f"(max_float_layers={cfg.max_float_layers}); raise it or drop the int8 variant"
        )
    return model, record
