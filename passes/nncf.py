"""nncf: int8 with NNCF post-training quantization of the ONNX model (QDQ nodes).

OpenVINO reads the QDQ model NNCF's ONNX backend writes as FakeQuantize and runs it in int8:
measured as fast and as accurate as NNCF on the converted OpenVINO model, and as a pass it is
one int8 step like `quantize` (cached, shared by the cpu and arm OpenVINO variants, judged
by the same gate). The options are NNCF's own: `preset`, `model_type` (`auto`: transformer
when the graph has attention, passes/graph_facts.py), `subset_size`, `fast_bias_correction`
and `ignored_scope` (ONNX node names, regex patterns over them, ONNX op types).

`model_type: transformer` turns on NNCF's SmoothQuant (activation outliers moved into the
weights before MatMuls, alpha `smooth_quant_alpha`, NNCF's 0.95 by default) as well as its
transformer quantizer placement; `fast_bias_correction` corrects each layer's output shift.

`accuracy_control` (`enabled: auto`: on when the calibration data is the user's; on generated
data no gate verdict means anything, so it stays off and the record says so): when the plain
result fails the int8 gate on every labelled sample (passes/accuracy.py's `Gates`: the
package's parity metrics and int8 tolerance per output kind, and the task metric when the
samples have labels, against the package's reference; the search then chooses on their
first half), first the coarse step of passes/int8_search.py (elementwise and
normalization arithmetic kept float, one more quantization), then
`nncf.quantize_with_accuracy_control` (NNCF 3.4 runs it on ONNX models: its ONNX backend has
the accuracy restorer), whose validation function is the gate's margin (>= 0: passes) and
whose `max_drop` is the float model's margin, so NNCF stops exactly when the gate passes.
NNCF reverts quantizer groups in its ranked order, at most `max_iterations`; the gate then
judges the result, and the record lists the nodes left in float.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from compiler.core.errors import NotApplicable, PassError
from compiler.core.quantized import QDQ_OPS
from compiler.core.telemetry import telemetry_off
from passes.accuracy import Budget, Gate, make_gates
from passes.base import Pass, PassConfig, PassContext, PassResult, op_histogram
from passes.graph_facts import graph_facts
from passes.int8_search import search_int8
from passes.ort_tools import drop_stale_value_info, quiet, run_model
from passes.quantize import (
    GENERATED_DATA_WARNING,
    foreign_ops,
    nothing_to_quantize,
    prepare_for_int8,
)
from passes.upcast import widen_for_int8

__all__ = [
    "NncfAccuracyControl",
    "NncfConfig",
    "NncfIgnoredScope",
    "NncfPass",
    "OverflowFix",
    "import_nncf",
]

# a float model this close to the outputs' tolerances leaves int8 no room (rounding decides)
_NO_MARGIN = 1e-9
AUTO_OFF = (
    "accuracy control off: the calibration data is generated, so no gate verdict on it means "
    "anything; give real data (--calibration-data, --sample-data) to turn it on"
)


def import_nncf() -> Any:
    """The nncf module, imported with its usage telemetry off (compiler/core/telemetry.py):
    the first import decides for the process."""
    with telemetry_off():
        import nncf
    return nncf


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NncfIgnoredScope(_Strict):
    """Nodes NNCF leaves in float: node names of the pass's input graph (unknown names are an
    error), regex patterns over those names, or ONNX op types."""

    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


class NncfAccuracyControl(_Strict):
    """`accuracy_control:` block: re-quantize with NNCF's accuracy control when the plain
    result fails the int8 gate."""

    enabled: bool | Literal["auto"] = Field(
        default="auto", description="auto: on when the calibration data is the user's"
    )
    arithmetic_float: bool = Field(
        default=True, description="try elementwise/normalization arithmetic in float first"
    )
    max_iterations: int = Field(
        default=8, ge=1, description="budget: quantizer groups NNCF may revert to float"
    )
    ranking_samples: int | None = Field(
        default=None, ge=1, description="samples NNCF ranks quantizer groups on; None: all"
    )
    max_seconds: float | None = Field(
        default=600.0,
        gt=0,
        description="wall-clock cap on the search after the plain model's check: NNCF is "
        "stopped at its next validation after it and the search's best so far kept; null: "
        "none. Where it stops the search, the result depends on the host's speed",
    )
    min_cosine: float | None = Field(
        default=None, ge=-1, le=1, description="None: the build's int8 parity tolerance"
    )
    min_top1: float | None = Field(
        default=None, ge=0, le=1, description="None: the build's int8 parity tolerance"
    )


# NNCF's OverflowFix values: 7-bit weights in the first layer, in every layer, in none
OverflowFix = Literal["first_layer_only", "enable", "disable"]


class NncfConfig(PassConfig):
    name: Literal["nncf"] = "nncf"
    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["auto", "cnn", "transformer"] = "auto"
    subset_size: int = Field(default=300, ge=1, description="calibration samples used, at most")
    fast_bias_correction: bool = True
    smooth_quant_alpha: float | None = Field(
        default=None,
        le=1,
        description="transformers' SmoothQuant alpha for MatMuls; None: NNCF's; < 0: off",
    )
    overflow_fix: OverflowFix = Field(
        default="first_layer_only",
        description="NNCF's 7-bit weights against 16-bit saturation on x86 without VNNI: in "
        "the first layer (NNCF's default), every layer (u8s8-rr, AVX2-safe), or none",
    )
    ignored_scope: NncfIgnoredScope = Field(default_factory=NncfIgnoredScope)
    accuracy_control: NncfAccuracyControl = Field(default_factory=NncfAccuracyControl)


def _nncf_version() -> str:
    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        return ""


class NncfPass(Pass[NncfConfig]):
    name = "nncf"
    # 2: the gate judges outputs by kind, and the task metric; 3: skips a quantized model;
    # 4: accuracy control on with user data, arithmetic-float step, SmoothQuant alpha; 5: a
    # model with nothing NNCF quantizes is skipped (NotApplicable), not failed; 6: the gate
    # judges channels of mixed scale one by one (compiler/core/parity.py); 8 (7 was a reverted
    # change): COCO-sized heads too; 9: "nothing to quantize" tells a quantizer that placed
    # nothing on top-level weighted nodes apart (ops outside the ONNX domain named); 10: an
    # fp16 model is widened to float32 and quantized (passes/upcast.py), not skipped; 11: the
    # gate compares outputs sized by the data (an NMS's detections; parity.py); 12: an output
    # that is a weight counts in the interface the pass must keep (passes/base.py); 13: the
    # gate reads a dense map's score channels as decisions at 0.5 (parity.py); 14: plain int8
    # is judged on every labelled sample, accuracy control only where it fails there; 15: it
    # chooses on the second half where plain int8 passes the first and fails the second;
    # 16: Casts of constants folded first (NNCF failed on them), the nodes sorted again
    # after (ORT's quantizer put an If before the If whose output its branch reads); 17:
    # attention as the dynamo exporter and tf2onnx write it is found (graph_facts.py); 18:
    # value_info sizes the model's own run contradicts are dropped first (ort_tools.py); 19:
    # the gate judges index outputs by decided agreement with the reference's scores; 20: the
    # refusal of a graph holding ops outside the ONNX domain names them
    version = "20"
    config_cls = NncfConfig
    # NNCF's CPU target is the same for x86-64 and aarch64: the cpu and arm variants share it.
    target_dependent: ClassVar[bool] = False
    uses_calibration: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = True  # the accuracy-control gate
    precision: ClassVar[str | None] = "int8"

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "nncf": _nncf_version()}

    def _prepare(
        self, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        return widen_for_int8(model, ctx)

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if not _nncf_version():
            raise PassError("nncf: NNCF is not installed; pip install 'compile-pkg[openvino]'")
        cfg = self.config
        feeds = ctx.calibration()[: cfg.subset_size]
        if not feeds:
            raise PassError(
                "nncf: int8 needs calibration samples and got none; give calibration data "
                "(--calibration-data) or drop this variant"
            )
        model, prepared = prepare_for_int8(model)
        stale = drop_stale_value_info(model, feeds[0])
        if stale:
            prepared["stale_shapes_dropped"] = len(stale)
        self._check_names(model)
        facts = graph_facts(model)
        model_type = cfg.model_type
        if model_type == "auto":
            model_type = "transformer" if facts.has_attention else "cnn"
        record: dict[str, Any] = {
            "preset": cfg.preset,
            "model_type": model_type,
            "model_type_rule": f"{cfg.model_type}: {facts.describe()}",
            "fast_bias_correction": cfg.fast_bias_correction,
            "calibration": {"samples": len(feeds), "source": ctx.calibration_source},
        }
        if model_type == "transformer":
            alpha = cfg.smooth_quant_alpha
            record["smooth_quant"] = "NNCF default" if alpha is None else alpha
        record.update({k: v for k, v in prepared.items() if v})
        kwargs = self._kwargs(model_type, len(feeds))
        out = self._quantize(model, feeds, kwargs)
        scope = cfg.ignored_scope
        if not (scope.names or scope.patterns or scope.types) and not any(
            n.op_type in QDQ_OPS for n in out.graph.node
        ):
            raise NotApplicable(nothing_to_quantize(model, "NNCF"))
        enabled = cfg.accuracy_control.enabled
        if enabled == "auto" and ctx.calibration_source != "user":
            record["accuracy_control_off"] = AUTO_OFF
        elif enabled:
            out, record["accuracy_control"] = self._accuracy_control(model, out, feeds, ctx, kwargs)
        record["quantized_ops"] = {k: v for k, v in op_histogram(out).items() if k in QDQ_OPS}
        if not record["quantized_ops"]:
            why = (
                "accuracy control kept every node in float to meet the int8 gate; loosen "
                "accuracy_control.min_cosine/min_top1"
                if "accuracy_control" in record
                else "nothing quantizable, or all in ignored_scope; narrow ignored_scope"
            )
            raise PassError(f"nncf: no node is quantized: {why}, or drop the int8 variant")
        generated = ctx.calibration_source == "generated"
        return PassResult(
            model=out, record=record, warnings=[GENERATED_DATA_WARNING] if generated else []
        )

    def _check_names(self, model: onnx.ModelProto) -> None:
        unknown = sorted(set(self.config.ignored_scope.names) - {n.name for n in model.graph.node})
        if unknown:
            raise PassError(
                f"nncf: ignored_scope.names {unknown} are not nodes of the model; names are the "
                "node names in the pass's input graph (see the build log's ops)"
            )

    def _kwargs(self, model_type: str, samples: int) -> dict[str, Any]:
        nncf = import_nncf()
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            AdvancedSmoothQuantParameters,
        )
        from nncf.quantization.advanced_parameters import OverflowFix as NncfOverflowFix

        cfg = self.config
        scope = cfg.ignored_scope
        advanced = AdvancedQuantizationParameters(overflow_fix=NncfOverflowFix(cfg.overflow_fix))
        if cfg.smooth_quant_alpha is not None:
            alpha = cfg.smooth_quant_alpha
            advanced.smooth_quant_alphas = AdvancedSmoothQuantParameters(
                convolution=-1, matmul=alpha if alpha >= 0 else -1
            )
        return {
            "advanced_parameters": advanced,
            "preset": nncf.QuantizationPreset(cfg.preset),
            "target_device": nncf.TargetDevice.CPU,
            "subset_size": samples,
            "fast_bias_correction": cfg.fast_bias_correction,
            "model_type": nncf.ModelType.TRANSFORMER if model_type == "transformer" else None,
            "ignored_scope": nncf.IgnoredScope(
                names=list(scope.names), patterns=list(scope.patterns), types=list(scope.types)
            ),
        }

    def _quantize(
        self, model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]], kwargs: dict[str, Any]
    ) -> onnx.ModelProto:
        nncf = import_nncf()
        try:
            with quiet("", "nncf"):
                return nncf.quantize(model, nncf.Dataset(feeds), **kwargs)
        except nncf.ValidationError as exc:  # a pattern or type that matches nothing, ...
            # or a graph it cannot read: ONNX Runtime's fused ops (an optimized BERT's
            # EmbedLayerNormalization) left "does not contain input edge connected to 0 port"
            msg = " ".join(str(exc).split())
            hint = _foreign_ops(model)
            raise PassError(f"nncf refused the model or its options: {msg}{hint}") from exc
        except Exception as exc:  # NNCF's own failure on a graph it does not handle
            msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            raise PassError(f"nncf failed on the model ({msg}){_foreign_ops(model)}") from exc

    def _accuracy_control(
        self,
        model: onnx.ModelProto,
        plain: onnx.ModelProto,
        feeds: list[dict[str, np.ndarray]],
        ctx: PassContext,
        kwargs: dict[str, Any],
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """The plain result if it passes the gate, else NNCF's accuracy-controlled one."""
        ac = self.config.accuracy_control
        gates = make_gates(model, ctx, feeds, ac.min_cosine, ac.min_top1)
        check = gates.first_check(plain)
        if check.whole.passed or check.blind:
            return plain, gates.unchanged(check)
        gate, budget = check.gate, Budget(ac.max_seconds)
        record: dict[str, Any] = {"gate_before": check.whole.record()}
        if check.chosen:
            record["searched_on"] = check.chosen
        if gate.note:
            record["note"] = gate.note
        float_outputs = run_model(model, gate.feeds)
        float_result = gate.judge(float_outputs)
        # room under the outputs' tolerances (a task with max_drop 0 leaves the float model
        # a margin of exactly 0 and int8 can still match it: judged on the outputs alone)
        room = gate.margin(float_outputs, gate.references)
        if not float_result.passed or room <= _NO_MARGIN:
            record["not_run"] = (
                f"the float input itself is at or outside the int8 gate (margin "
                f"{min(room, float_result.margin):.3g}) against the reference; no int8 model "
                "can pass it"
            )
            return plain, record

        def quantize(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
            return self._quantize(model, feeds, _ignoring(kwargs, exclude))

        found = search_int8(
            model, {"nncf": quantize}, gate, [], ac.arithmetic_float, (plain, check.result), budget
        )
        if "arithmetic_float" in found.record:
            record["arithmetic_float"] = found.record["arithmetic_float"]
        if found.result.passed:
            record["kept_in_float"] = _float_nodes(found.model, plain)
            record["gate_after"] = found.result.record()
            return found.model, record
        controlled = _restore_accuracy(
            model,
            feeds,
            gate,
            max(float_result.margin, 0.0),
            ac,
            _ignoring(kwargs, found.exclude),
            budget,
        )
        if controlled is None:  # out of time: the coarse step's model, the best so far
            record["kept_in_float"] = _float_nodes(found.model, plain)
            record["gate_after"] = found.result.record()
            record["budget_spent"] = budget.stopped("in NNCF's accuracy control, still failing")
            return found.model, record
        after = gate.check(controlled)
        record["kept_in_float"] = _float_nodes(controlled, plain)
        record["gate_after"] = after.record()
        if not after.passed:
            record["budget_spent"] = (
                f"still failing after NNCF reverted {len(record['kept_in_float'])} nodes to "
                f"float (max_iterations={ac.max_iterations}); raise it or drop the int8 variant"
            )
        return controlled, record


def _foreign_ops(model: onnx.ModelProto) -> str:
    """A hint naming the model's ops outside the ONNX domain, which NNCF's ONNX backend has
    no metatypes or shape rules for ('' when there are none): skl2onnx's ai.onnx.ml.Scaler
    output has no type and NNCF raised KeyError on the Cast after it."""
    foreign = foreign_ops(model)
    if not foreign:
        return ""
    return (
        f"; the model holds ops outside the ONNX domain ({', '.join(foreign[:8])}), which NNCF's "
        "ONNX backend may not handle: quantize with the ONNX Runtime variants (ort-int8) or "
        "disable this variant"
    )


def _ignoring(kwargs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """NNCF's options with `names` added to the ignored scope."""
    nncf = import_nncf()

    if not names:
        return kwargs
    scope = kwargs["ignored_scope"]
    wider = nncf.IgnoredScope(
        names=sorted({*scope.names, *names}), patterns=scope.patterns, types=scope.types
    )
    return {**kwargs, "ignored_scope": wider}


def _restore_accuracy(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    gate: Gate,
    max_drop: float,
    ac: NncfAccuracyControl,
    kwargs: dict[str, Any],
    budget: Budget,
) -> onnx.ModelProto | None:
    """`nncf.quantize_with_accuracy_control` with the gate's margin as its metric; None where
    `budget` ran out first (checked at each of NNCF's validations)."""
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    def validate(
        candidate: onnx.ModelProto, data: Iterable[tuple[int, dict[str, np.ndarray]]]
    ) -> tuple[float, list[float]]:
        if budget.spent():
            raise _OutOfTime
        items = list(data)
        outs = run_model(candidate, [f for _, f in items])
        at = [i for i, _ in items]
        per_item = [gate.judge([o], [i]).margin for o, i in zip(outs, at, strict=True)]
        # NNCF divides by the float model's metric (its relative drop, even when unused):
        # 1 + margin keeps it off zero and leaves every difference, so max_drop, as it is
        return 1.0 + gate.judge(outs, at).margin, [1.0 + m for m in per_item]

    options = dict(kwargs)  # nncf.quantize's options; this function names one differently
    restorer = AdvancedAccuracyRestorerParameters(
        max_num_iterations=ac.max_iterations,
        ranking_subset_size=ac.ranking_samples,
        num_ranking_workers=1,  # no thread pool: one ORT thread per session, reproducible
    )
    try:
        with quiet("", "nncf"):
            return nncf.quantize_with_accuracy_control(
                model,
                nncf.Dataset(feeds),
                nncf.Dataset(list(enumerate(gate.feeds)), lambda item: item[1]),
                validate,
                max_drop=max_drop,
                drop_type=nncf.DropType.ABSOLUTE,
                advanced_accuracy_restorer_parameters=restorer,
                advanced_quantization_parameters=options.pop("advanced_parameters"),
                **options,
            )
    except nncf.ValidationError as exc:
        msg = " ".join(str(exc).split())
        raise PassError(f"nncf accuracy control refused the model: {msg}") from exc
    except _OutOfTime:
        return None


class _OutOfTime(Exception):
    """Raised in NNCF's validation callback once the search's budget is spent: NNCF has no
    time cap of its own, and lets the callback's exception through."""


def _dequantized_inputs(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that read an input through a DequantizeLinear."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name
        for n in model.graph.node
        if n.op_type not in QDQ_OPS and any(i in dq for i in n.input)
    }


def _float_nodes(controlled: onnx.ModelProto, plain: onnx.ModelProto) -> list[str]:
    """Nodes the plain result fed through Q/DQ and the controlled one does not."""
    return sorted(_dequantized_inputs(plain) - _dequantized_inputs(controlled))
