"""Read an int8 model's flavour off its graph, for an artifact's requirements: the signedness
of its activations and weights, and whether its weights use 7 bits (ONNX Runtime's
`reduce_range`, the AVX2-safe flavour: compiler/core/isa.py). Derived, never declared, like
a variant's precision: a quantized source model gets its flavour the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.core.host import Requirements
from compiler.core.isa import Int8Flavour, meant_for

__all__ = ["int8_flavour", "with_int8_flavour"]

_INT8: dict[int, str] = {onnx.TensorProto.INT8: "s8", onnx.TensorProto.UINT8: "u8"}
# op -> input index of its weight: the int8 GEMM operand whose range decides saturation
# (QDQ: the weight comes through a DequantizeLinear; QOperator and dynamic: directly)
_GEMM_WEIGHT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}
_INT_WEIGHT = {"MatMulInteger": 1, "ConvInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3}
# reduce_range's weight ranges (ONNX Runtime's symmetric int8: [-64, 64]); with |w| <= 64,
# two u8 x s8 products sum to at most 2 * 255 * 64 = 32640: no 16-bit saturation
_SEVEN_BITS = {"s8": (-64, 64), "u8": (0, 127)}
# (activations, weights, 7-bit weights) -> flavour; u8u8 never saturates, 7 bits or not
_FLAVOURS: dict[tuple[str, str, bool], Int8Flavour] = {
    ("u8", "s8", False): "u8s8",
    ("u8", "s8", True): "u8s8-rr",
    ("s8", "s8", False): "s8s8",
    ("s8", "s8", True): "s8s8-rr",
    ("u8", "u8", False): "u8u8",
    ("u8", "u8", True): "u8u8",
}


def _weights(model: onnx.ModelProto) -> tuple[list[onnx.TensorProto], set[str]]:
    """The quantized weights of the GEMM-like ops (not constants of Add and the like, which
    are quantized as activations), and the names of those only depthwise convolutions read
    (one input channel per group). A depthwise kernel sums each output's products itself,
    not in pairs of u8 x s8 products: NNCF's overflow fix leaves their weights at full range
    (its ONNX backend's `overflow_fix_metatypes`: convolution, transposed convolution and
    MatMul, not depthwise convolution), so they say nothing of saturation."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type in _INT8}
    dequantized = {
        n.output[0]: n.input[0]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in inits
    }
    depthwise: set[str] = set()
    other: set[str] = set()
    for n in model.graph.node:
        name = None
        if (i := _GEMM_WEIGHT.get(n.op_type)) is not None and len(n.input) > i:
            name = dequantized.get(n.input[i])
        elif (i := _INT_WEIGHT.get(n.op_type)) is not None and len(n.input) > i:
            name = n.input[i] if n.input[i] in inits else None
        if name is None:
            continue
        dims = list(inits[name].dims)
        is_dw = n.op_type in ("Conv", "ConvInteger", "QLinearConv") and _group(n) > 1
        (depthwise if is_dw and len(dims) > 1 and dims[1] == 1 else other).add(name)
    return [inits[n] for n in sorted(depthwise | other)], depthwise - other


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _activation_type(model: onnx.ModelProto) -> str | None:
    """u8 or s8: the zero point type of the QuantizeLinear nodes on activations (uint8 when
    a node gives none, as ONNX defines); dynamic int8 quantizes activations to uint8."""
    inits = {t.name: t for t in model.graph.initializer}
    kinds = set()
    for n in model.graph.node:
        if n.op_type == "DynamicQuantizeLinear":
            kinds.add("u8")
        elif n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            zp = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            kinds.add(_INT8.get(zp.data_type, "u8") if zp is not None else "u8")
    if not kinds:
        return None
    return "s8" if kinds == {"s8"} else "u8"


def int8_flavour(model: onnx.ModelProto, base_dir: Path) -> Int8Flavour | None:
    """The model's int8 flavour; None when it quantizes no weights (nothing to say)."""
    weights, depthwise = _weights(model)
    act = _activation_type(model)
    if not weights or act is None:
        return None
    kinds = {_INT8[t.data_type] for t in weights}
    weight = "s8" if kinds == {"s8"} else "u8"
    low, high = _SEVEN_BITS[weight]
    summed_in_pairs = [t for t in weights if t.name not in depthwise] or weights
    arrays = [numpy_helper.to_array(t, base_dir=str(base_dir)) for t in summed_in_pairs]
    seven = all(a.size == 0 or (int(np.min(a)) >= low and int(np.max(a)) <= high) for a in arrays)
    return _FLAVOURS.get((act, weight, seven))  # s8u8: no CPU kernel is built for it


def with_int8_flavour(req: Requirements, model_path: Path) -> Requirements:
    """`req` with the int8 flavour of the model at `model_path` and the classes it is meant
    for (unchanged when the model quantizes no weights)."""
    model = onnx.load(str(model_path), load_external_data=False)
    flavour = int8_flavour(model, model_path.parent)
    if flavour is None:
        return req
    return req.model_copy(update={"int8": flavour, "meant_for": meant_for(req.arch, int8=flavour)})
