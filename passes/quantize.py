"""quantize: int8 with ONNX Runtime's quantizer, static QDQ or dynamic, types per target.

Static QDQ (calibrated activation ranges, per-channel weights) suits CNNs; dynamic int8
(weights int8, activation ranges computed per batch at run time) suits transformer and
recurrent graphs, whose activation ranges vary a lot between inputs. `mode: auto` picks
dynamic for graphs with LSTM/GRU/RNN, or with attention (MatMul -> Softmax -> MatMul) and
at least as many MatMul/Gemm as Conv nodes; static otherwise (passes/graph_facts.py).

`activation_type: auto` follows ONNX Runtime's CPU guidance: u8 activations with s8 weights
on x86-64 (the u8 x s8 VPMADDUBSW/VNNI kernels), s8/s8 on arm, symmetric s8/s8 on gpu
(TensorRT reads only symmetric int8 QDQ).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field

from compiler.core.errors import PassError
from passes.accuracy import AccuracyAwareConfig, keep_sensitive_layers_in_float, make_gate
from passes.base import Pass, PassConfig, PassContext, PassResult, op_histogram
from passes.graph_facts import graph_facts
from passes.ort_tools import quiet

__all__ = ["GENERATED_DATA_WARNING", "QuantizeConfig", "QuantizePass", "prepare_for_int8"]

IntType = Literal["u8", "s8"]
_PER_CHANNEL_OPSET = 13

# target -> (activations, weights, symmetric activations); None: the shared prefix.
AUTO_TYPES: dict[str | None, tuple[IntType, IntType, bool]] = {
    "cpu": ("u8", "s8", False),
    "arm": ("s8", "s8", False),
    "gpu": ("s8", "s8", True),
    None: ("u8", "s8", False),
}
# Dynamic int8 of Conv (ConvInteger) is slower than fp32 on ONNX Runtime CPU: leave it out.
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization")
_QUANT_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "QAttention",
        "QGemm",
    }
)
GENERATED_DATA_WARNING = (
    "calibration used GENERATED data (random feeds from the contract), not real inputs: "
    "activation ranges, and any accuracy figure measured on them, are not meaningful; "
    "give real samples (calibration data in the config) before trusting this int8 artifact"
)


class QuantizeConfig(PassConfig):
    name: Literal["quantize"] = "quantize"
    mode: Literal["auto", "static", "dynamic"] = "auto"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90, le=100)
    calibration_samples: int = Field(default=32, ge=1, le=10_000)
    activation_type: Literal["auto", "u8", "s8"] = "auto"
    weight_type: Literal["auto", "u8", "s8"] = "auto"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = Field(default=(), description="empty: ONNX Runtime's defaults")
    exclude_nodes: tuple[str, ...] = ()
    # Softmax output in 8 bits flips the top-1 of near-tied class scores (a 0.004 step on
    # probabilities); it costs little to leave it float.
    exclude_op_types: tuple[str, ...] = ("Softmax",)
    accuracy_aware: AccuracyAwareConfig = Field(default_factory=AccuracyAwareConfig)


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[name]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def __len__(self) -> int:
        return len(self.feeds)


def prepare_for_int8(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy fit for int8 quantizers (ONNX Runtime's, NNCF's): unnamed nodes get stable names
    (so exclusions can address every node), and Constant-node tensors become initializers
    (quantizers quantize weights only when they are initializers; as Constants they would be
    treated as activations, per-tensor)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {n.name for n in graph.node if n.name}
    named = 0
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, named = name, named + 1
            taken.add(name)
    keep, moved = [], 0
    for node in graph.node:
        value = [
            a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR
        ]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            keep.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
    return out, {"named_unnamed_nodes": named, "constants_to_initializers": moved}


def _upgrade_for_per_channel(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Per-channel QDQ needs DequantizeLinear's `axis` (opset 13); upgrade older models."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= _PER_CHANNEL_OPSET:
        return model, ""
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, _PER_CHANNEL_OPSET)
    except Exception as exc:  # the converter raises bare RuntimeErrors per op
        raise PassError(
            f"quantize: per-channel int8 needs opset >= {_PER_CHANNEL_OPSET}, the model has "
            f"{opset} and cannot be upgraded ({exc}); set normalize.min_opset: "
            f"{_PER_CHANNEL_OPSET} or per_channel: false"
        ) from exc
    return upgraded, f"upgraded opset {opset} -> {_PER_CHANNEL_OPSET} for per-channel weights"


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    # also covers passes/accuracy.py: bump on changes there; 4: skips a quantized or half-precision model
    version = "4"
    config_cls = QuantizeConfig
    target_dependent: ClassVar[bool] = True
    uses_calibration: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = True
    precision: ClassVar[str | None] = "int8"

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def _types(self, target: str | None) -> tuple[IntType, IntType, bool]:
        act, weight, symmetric = AUTO_TYPES.get(target, AUTO_TYPES[None])
        cfg = self.config
        if cfg.activation_type != "auto":
            act = cfg.activation_type
        if cfg.weight_type != "auto":
            weight = cfg.weight_type
        return act, weight, symmetric

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        cfg = self.config
        model, prepared = prepare_for_int8(model)
        upgraded = ""
        if cfg.per_channel:
            model, upgraded = _upgrade_for_per_channel(model)
        facts = graph_facts(model)
        mode = cfg.mode
        if mode == "auto":
            mode = "dynamic" if facts.prefers_dynamic_int8() else "static"
        unknown = sorted(set(cfg.exclude_nodes) - {n.name for n in model.graph.node})
        if unknown:
            raise PassError(
                f"quantize: exclude_nodes {unknown} are not nodes of the model; "
                "names are the node names in the input graph (see the build log's ops)"
            )
        exclude = sorted(
            {
                *cfg.exclude_nodes,
                *(n.name for n in model.graph.node if n.op_type in cfg.exclude_op_types),
            }
        )
        act, weight, symmetric = self._types(ctx.target)
        record: dict[str, Any] = {
            "mode": mode,
            "mode_rule": f"{cfg.mode}: {facts.describe()}",
            "activation_type": act if mode == "static" else "dynamic u8",
            "weight_type": weight,
            "per_channel": cfg.per_channel,
            "excluded_nodes": exclude,
        }
        record.update({k: v for k, v in prepared.items() if v})
        if upgraded:
            record["opset"] = upgraded
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            if mode == "static":
                feeds = self._calibration(ctx, record)
                quantize = self._static_quantizer(model, feeds, act, weight, symmetric, Path(tmp))
            else:
                feeds = ctx.calibration()[: cfg.calibration_samples]
                quantize = self._dynamic_quantizer(model, weight, Path(tmp))
            out = quantize(exclude, None)
            self._check_quantized(out)
            if cfg.accuracy_aware.enabled:
                if not feeds:
                    raise PassError("quantize: accuracy_aware needs sample data; none was given")
                aa = cfg.accuracy_aware
                gate = make_gate(model, ctx, feeds, aa.min_cosine, aa.min_top1)
                out, record["accuracy_aware"] = keep_sensitive_layers_in_float(
                    model, out, quantize, gate, exclude, cfg.accuracy_aware
                )
        uses_data = mode == "static" or cfg.accuracy_aware.enabled
        record["quantized_ops"] = {k: v for k, v in op_histogram(out).items() if k in _QUANT_OPS}
        generated = ctx.calibration_source == "generated"
        warnings = [GENERATED_DATA_WARNING] if generated and uses_data else []
        return PassResult(model=out, record=record, warnings=warnings)

    def _calibration(self, ctx: PassContext, record: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        feeds = ctx.calibration()[: self.config.calibration_samples]
        if not feeds:
            raise PassError(
                "quantize (static): no calibration samples; give calibration data in the "
                "config, or use mode: dynamic"
            )
        method = self.config.calibration_method
        shapes = sorted({str({k: np.shape(v) for k, v in f.items()}) for f in feeds})
        if method != "minmax" and len(shapes) > 1:
            raise PassError(
                f"quantize: {method} calibration needs samples of one shape (ONNX Runtime's "
                f"histogram collector stacks them), got {len(shapes)} shapes, e.g. {shapes[:2]}; "
                "use calibration_method: minmax or give same-size samples"
            )
        record["calibration"] = {
            "method": self.config.calibration_method,
            "samples": len(feeds),
            "source": ctx.calibration_source,
        }
        return feeds

    def _static_quantizer(
        self,
        model: onnx.ModelProto,
        feeds: list[dict[str, np.ndarray]],
        act: IntType,
        weight: IntType,
        symmetric: bool,
        tmp: Path,
    ) -> Any:
        """A function (exclude, only) -> quantized model; calibrates once, then reuses ranges."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

        cfg = self.config
        method = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[cfg.calibration_method]
        extra: dict[str, Any] = {"CalibPercentile": cfg.percentile}
        if symmetric:
            extra.update(ActivationSymmetric=True, WeightSymmetric=True)
        cache = tmp / "calibration.json"
        # A path, not the ModelProto: given a proto, quantize_static saves it with
        # save_as_external_data=True, which rewrites the caller's proto in place.
        src = tmp / "float.onnx"
        onnx.save(model, src)
        calls = [0]

        def quantize(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
            calls[0] += 1
            dst = tmp / f"q{calls[0]}.onnx"
            with quiet():
                quantize_static(
                    src,
                    dst,
                    _Reader(feeds) if not cache.exists() else None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(cfg.op_types) or None,
                    per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range,
                    activation_type=_qtype(act),
                    weight_type=_qtype(weight),
                    nodes_to_quantize=only,
                    nodes_to_exclude=exclude,
                    calibrate_method=method,
                    extra_options=extra,
                    calibration_cache_path=cache,
                )
            return onnx.load(dst)

        return quantize

    def _dynamic_quantizer(self, model: onnx.ModelProto, weight: IntType, tmp: Path) -> Any:
        from onnxruntime.quantization import quantize_dynamic

        cfg = self.config
        src = tmp / "float.onnx"
        onnx.save(model, src)
        calls = [0]

        def quantize(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
            calls[0] += 1
            dst = tmp / f"d{calls[0]}.onnx"
            with quiet():
                quantize_dynamic(
                    src,
                    dst,
                    op_types_to_quantize=list(cfg.op_types or DYNAMIC_OP_TYPES),
                    per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range,
                    weight_type=_qtype(weight),
                    nodes_to_quantize=only,
                    nodes_to_exclude=exclude,
                )
            return onnx.load(dst)

        return quantize

    def _check_quantized(self, out: onnx.ModelProto) -> None:
        if not any(op in _QUANT_OPS for op in op_histogram(out)):
            raise PassError(
                "quantize: no node was quantized (no ops of the quantizable types, or all "
                "excluded); set op_types, fewer exclusions, or drop the int8 variant"
            )
