"""Preflight: ONNX ops and attributes TensorRT's ONNX parser is documented not to support.

The data is onnx-tensorrt's `docs/operators.md` for TensorRT 10.15 (opset 9 to 24): the ops
marked N, and the restrictions column where it can be checked statically. Run at build time
so a user learns before deployment, including when the engine build itself is deferred.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import BaseModel, ConfigDict

__all__ = ["OPSET_RANGE", "UNSUPPORTED_OPS", "Finding", "preflight", "format_findings"]

MATRIX_VERSION = "10.15"
OPSET_RANGE = (9, 24)

UNSUPPORTED_OPS = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr",
    "BitwiseXor", "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool",
    "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss", "Optional",
    "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul",
    "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer",
    "Unique",
})  # fmt: skip

# Ops the matrix lists as supported (Y); an op in neither set is unknown to the matrix.
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "Attention", "AveragePool", "BatchNormalization", "BlackmanWindow", "Cast", "CastLike",
    "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose",
    "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace", "DequantizeLinear", "Div",
    "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor",
    "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "GRU", "HammingWindow", "HannWindow", "HardSigmoid", "HardSwish",
    "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop",
    "LRN", "LSTM", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool", "Mean",
    "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression",
    "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
    "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare",
    "Relu", "Reshape", "Resize", "ReverseSequence", "RMSNormalization", "RNN", "RoiAlign",
    "RotaryEmbedding", "Round", "STFT", "ScaledTanh", "Scan", "Scatter", "ScatterElements",
    "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size", "Slice",
    "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum",
    "Tan", "Tanh", "TensorScatter", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
    "Unsqueeze", "Upsample", "Where", "Xor",
})  # fmt: skip

_DEFAULT_DOMAINS = ("", "ai.onnx")
_POOLS = frozenset({"AveragePool", "MaxPool", "LpPool"})


class Finding(BaseModel):
    """One preflight result. `error`: the parser is documented to reject it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    severity: str  # error | warning
    node: str  # node name, or "<model>" for graph-level findings
    op: str
    message: str

    def line(self) -> str:
        where = "model" if self.node == "<model>" else f"node '{self.node}' ({self.op})"
        return f"{self.severity}: {where}: {self.message}"


def _nodes(
    graph: onnx.GraphProto | onnx.FunctionProto, prefix: str = ""
) -> Iterator[tuple[str, onnx.NodeProto]]:
    for i, node in enumerate(graph.node):
        name = f"{prefix}{node.name or f'{node.op_type}_{i}'}"
        yield name, node
        for attr in node.attribute:
            subgraphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for sub in subgraphs:
                yield from _nodes(sub, f"{name}/{attr.name}/")


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _const_nonzero(model: onnx.ModelProto, name: str) -> bool | None:
    """Whether initializer `name` has a nonzero element; None when it is not an initializer."""
    for init in model.graph.initializer:
        if init.name == name:
            return bool(np.any(numpy_helper.to_array(init) != 0))
    return None


def _restrictions(model: onnx.ModelProto, node: onnx.NodeProto) -> Iterator[tuple[str, str]]:
    op = node.op_type
    if op in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        nonzero = _const_nonzero(model, node.input[2])
        if nonzero:
            yield "error", "zero point must be zero (TensorRT quantization is symmetric)"
        elif nonzero is None:
            yield "warning", "zero point is not an initializer; TensorRT needs it to be zero"
    if op in _POOLS and any(d != 1 for d in _attr(node, "dilations", []) or []):  # type: ignore[union-attr]
        yield "error", "dilations must be empty or all ones"
    if op == "MaxPool" and len([o for o in node.output if o]) > 1:
        yield "error", "the Indices output is not supported"
    if op == "TopK" and _attr(node, "sorted", 1) == 0:
        yield "error", "sorted must be 1"
    if op == "Resize":
        if _attr(node, "antialias", 0):
            yield "error", "antialiasing is not supported"
        mode = _attr(node, "mode", b"nearest")
        if isinstance(mode, bytes) and mode.decode() not in ("nearest", "linear"):
            yield "error", f"mode '{mode.decode()}' is not supported (nearest, linear)"
    if op == "ScatterND" and _attr(node, "reduction", b"none") not in (b"none", "none"):
        yield "error", "reduction other than 'none' is not supported"
    if op == "LayerNormalization" and len([o for o in node.output if o]) > 1:
        yield "warning", "only the first output Y is supported"


def _type_findings(model: onnx.ModelProto) -> Iterator[Finding]:
    io = {v.name for v in [*model.graph.input, *model.graph.output]}
    values = [*model.graph.input, *model.graph.output, *model.graph.value_info]
    for vi in values:
        elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        if elem == onnx.TensorProto.STRING:
            yield Finding(
                severity="error",
                node="<model>",
                op="",
                message=f"tensor '{vi.name}' is a string tensor",
            )
        elif elem == onnx.TensorProto.DOUBLE:
            yield Finding(
                severity="warning",
                node="<model>",
                op="",
                message=f"tensor '{vi.name}' is float64; TensorRT casts it to float32",
            )
        elif elem == onnx.TensorProto.UINT8 and vi.name not in io:
            yield Finding(
                severity="warning",
                node="<model>",
                op="",
                message=f"tensor '{vi.name}' is uint8, supported only as network I/O",
            )


def preflight(model: onnx.ModelProto) -> list[Finding]:
    """Check a model against TensorRT's ONNX support matrix; errors first, in graph order."""
    found: list[Finding] = []
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    lo, hi = OPSET_RANGE
    if opset is not None and not lo <= opset <= hi:
        found.append(Finding(
            severity="error", node="<model>", op="",
            message=f"opset {opset} is outside the {lo}..{hi} TensorRT {MATRIX_VERSION} parses; "
            f"convert it with onnx.version_converter",
        ))  # fmt: skip
    local = {(f.domain, f.name) for f in model.functions}
    functions = [(f"{f.name}/", f) for f in model.functions]
    nodes = [*_nodes(model.graph), *(n for pre, f in functions for n in _nodes(f, pre))]
    for name, node in nodes:
        if node.domain not in _DEFAULT_DOMAINS:
            if (node.domain, node.op_type) not in local:
                found.append(Finding(
                    severity="error", node=name, op=node.op_type,
                    message=f"custom-domain op '{node.domain}::{node.op_type}' needs a TensorRT "
                    f"plugin registered under that name",
                ))  # fmt: skip
            continue
        if node.op_type in UNSUPPORTED_OPS:
            found.append(Finding(
                severity="error", node=name, op=node.op_type,
                message=f"{node.op_type} is not supported by TensorRT's ONNX parser "
                f"(onnx-tensorrt operators.md, TensorRT {MATRIX_VERSION})",
            ))  # fmt: skip
            continue
        if node.op_type not in SUPPORTED_OPS:
            found.append(Finding(
                severity="warning", node=name, op=node.op_type,
                message=f"{node.op_type} is not in TensorRT {MATRIX_VERSION}'s support matrix",
            ))  # fmt: skip
            continue
        for severity, msg in _restrictions(model, node):
            found.append(Finding(severity=severity, node=name, op=node.op_type, message=msg))
    found.extend(_type_findings(model))
    return sorted(found, key=lambda f: f.severity != "error")


def format_findings(findings: list[Finding], limit: int = 20, named: int = 3) -> str:
    """One line per distinct finding, in order: findings that say the same of several nodes
    (an ORT-optimized transformer's 13 SkipLayerNormalization nodes) are one line with their
    count and the first `named` nodes, so the kinds of trouble show, not a page of one kind.
    At most `limit` lines, then how many more there are."""
    groups: dict[tuple[str, str], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.severity, f.message), []).append(f)
    lines = []
    for (severity, message), same in list(groups.items())[:limit]:
        if len(same) == 1:
            lines.append(same[0].line())
            continue
        names = ", ".join(f"'{f.node}'" for f in same[:named])
        more = f" and {len(same) - named} more" if len(same) > named else ""
        ops = sorted({f.op for f in same})
        lines.append(f"{severity}: {len(same)} {'/'.join(ops)} nodes ({names}{more}): {message}")
    if len(groups) > limit:
        rest = sum(len(g) for g in list(groups.values())[limit:])
        lines.append(f"... and {len(groups) - limit} more kinds ({rest} findings)")
    return "\n  ".join(lines)
