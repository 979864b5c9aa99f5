"""nncf: int8 with NNCF post-training quantization of the ONNX model (QDQ nodes).

OpenVINO reads the QDQ model NNCF's ONNX backend writes as FakeQuantize and runs it in int8:
measured as fast and as accurate as NNCF on the converted OpenVINO model, and as a pass it is
one int8 step like `quantize` (cached, shared by the cpu and arm OpenVINO variants, judged
by the same gate). The options are NNCF's own: `preset`, `model_type` (`auto`: transformer
when the graph has attention, passes/graph_facts.py), `subset_size`, `fast_bias_correction`
and `ignored_scope` (ONNX node names, regex patterns over them, ONNX op types).

`accuracy_control`: when the plain result fails the int8 gate (passes/accuracy.py's `Gate`:
the package's parity metrics and int8 tolerance, against the package's reference), quantize
again with `nncf.quantize_with_accuracy_control` (NNCF 3.4 runs it on ONNX models: its ONNX
backend has the accuracy restorer), whose validation function is the gate's margin (>= 0:
passes) and whose `max_drop` is the float model's margin, so NNCF stops exactly when the gate
passes. NNCF reverts quantizer groups in its ranked order, at most `max_iterations`; the gate
then judges the result, and the record lists the nodes NNCF left in float.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from compiler.core.errors import PassError
from passes.accuracy import Gate, make_gate
from passes.base import Pass, PassConfig, PassContext, PassResult, op_histogram
from passes.graph_facts import graph_facts
from passes.ort_tools import quiet, run_model
from passes.quantize import GENERATED_DATA_WARNING, prepare_for_int8

__all__ = ["NncfAccuracyControl", "NncfConfig", "NncfIgnoredScope", "NncfPass"]

_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
# a float model this close to the gate's edge leaves int8 no room (and rounding decides)
_NO_MARGIN = 1e-9


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

    enabled: bool = False
    max_iterations: int = Field(
        default=8, ge=1, description="budget: quantizer groups NNCF may revert to float"
    )
    ranking_samples: int | None = Field(
        default=None, ge=1, description="samples NNCF ranks quantizer groups on; None: all"
    )
    min_cosine: float | None = Field(
        default=None, ge=-1, le=1, description="None: the build's int8 parity tolerance"
    )
    min_top1: float | None = Field(
        default=None, ge=0, le=1, description="None: the build's int8 parity tolerance"
    )


class NncfConfig(PassConfig):
    name: Literal["nncf"] = "nncf"
    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["auto", "cnn", "transformer"] = "auto"
    subset_size: int = Field(default=300, ge=1, description="calibration samples used, at most")
    fast_bias_correction: bool = True
    ignored_scope: NncfIgnoredScope = Field(default_factory=NncfIgnoredScope)
    accuracy_control: NncfAccuracyControl = Field(default_factory=NncfAccuracyControl)


def _nncf_version() -> str:
    try:
        return importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        return ""


class NncfPass(Pass[NncfConfig]):
    name = "nncf"
    version = (
        "3"  # 2: the gate judges outputs by kind, and the task metric; 3: skips a quantized model
    )
    config_cls = NncfConfig
    # NNCF's CPU target is the same for x86-64 and aarch64: the cpu and arm variants share it.
    target_dependent: ClassVar[bool] = False
    uses_calibration: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = True  # the accuracy-control gate
    precision: ClassVar[str | None] = "int8"

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "nncf": _nncf_version()}

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
        record.update({k: v for k, v in prepared.items() if v})
        kwargs = self._kwargs(model_type, len(feeds))
        out = self._quantize(model, feeds, kwargs)
        if cfg.accuracy_control.enabled:
            out, record["accuracy_control"] = self._accuracy_control(model, out, feeds, ctx, kwargs)
        record["quantized_ops"] = {k: v for k, v in op_histogram(out).items() if k in _QDQ}
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
        import nncf

        cfg = self.config
        scope = cfg.ignored_scope
        return {
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
        import nncf

        try:
            with quiet("", "nncf"):
                return nncf.quantize(model, nncf.Dataset(feeds), **kwargs)
        except nncf.ValidationError as exc:  # a pattern or type that matches nothing, ...
            msg = " ".join(str(exc).split())
            raise PassError(f"nncf refused the model or its options: {msg}") from exc

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
        gate = make_gate(model, ctx, feeds, ac.min_cosine, ac.min_top1)
        before = gate.check(plain)
        record: dict[str, Any] = {"gate_before": before.record()}
        if gate.note:
            record["note"] = gate.note
        if before.passed:
            record["kept_in_float"] = []
            return plain, record
        float_margin = gate.check(model).margin
        if float_margin <= _NO_MARGIN:
            record["not_run"] = (
                f"the float input itself is at or outside the int8 gate (margin "
                f"{float_margin:.3g}) against the reference; no int8 model can pass it"
            )
            return plain, record

        controlled = _restore_accuracy(model, feeds, gate, float_margin, ac, kwargs)
        after = gate.check(controlled)
        record["kept_in_float"] = _float_nodes(controlled, plain)
        record["gate_after"] = after.record()
        if not after.passed:
            record["budget_spent"] = (
                f"still failing after NNCF reverted {len(record['kept_in_float'])} nodes to "
                f"float (max_iterations={ac.max_iterations}); raise it or drop the int8 variant"
            )
        return controlled, record


def _restore_accuracy(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    gate: Gate,
    max_drop: float,
    ac: NncfAccuracyControl,
    kwargs: dict[str, Any],
) -> onnx.ModelProto:
    """`nncf.quantize_with_accuracy_control` with the gate's margin as its metric."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    def validate(
        candidate: onnx.ModelProto, data: Iterable[tuple[int, dict[str, np.ndarray]]]
    ) -> tuple[float, list[float]]:
        items = list(data)
        outs = run_model(candidate, [f for _, f in items])
        at = [i for i, _ in items]
        per_item = [gate.judge([o], [i]).margin for o, i in zip(outs, at, strict=True)]
        return gate.judge(outs, at).margin, per_item

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
                **kwargs,
            )
    except nncf.ValidationError as exc:
        msg = " ".join(str(exc).split())
        raise PassError(f"nncf accuracy control refused the model: {msg}") from exc


def _dequantized_inputs(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that read an input through a DequantizeLinear."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {
        n.name for n in model.graph.node if n.op_type not in _QDQ and any(i in dq for i in n.input)
    }


def _float_nodes(controlled: onnx.ModelProto, plain: onnx.ModelProto) -> list[str]:
    """Nodes the plain result fed through Q/DQ and the controlled one does not."""
    return sorted(_dequantized_inputs(plain) - _dequantized_inputs(controlled))
