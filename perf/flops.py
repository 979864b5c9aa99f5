"""Count a model's multiply-accumulate work from its ONNX graph: Conv, ConvTranspose,
MatMul (attention's Q.K^T and P.V included), Gemm, and the recurrent cells' matrix products
(LSTM, GRU, RNN: every step multiplies the input by W and the hidden state by R, in each
direction). One multiply-add is 2 FLOPs.

Shapes come from ONNX shape inference with the graph inputs fixed to one concrete feed;
tensors that inference leaves unresolved (data-dependent Reshape targets and the like) are
read off one ONNX Runtime run that exposes them as extra outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

__all__ = ["FlopCount", "count_flops"]

COUNTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN")
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}  # W: [directions, gates * hidden, input]


@dataclass
class FlopCount:
    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    nodes: int = 0
    shapes_from_runtime: int = 0  # tensors whose shape came from an ORT run
    skipped: list[str] = field(default_factory=list)  # nodes whose shapes stayed unknown

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "gflop": self.total / 1e9,
            "by_op": self.by_op,
            "nodes": self.nodes,
            "shapes_from_runtime": self.shapes_from_runtime,
            "skipped": self.skipped,
        }


def _fix_inputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> None:
    for vi in model.graph.input:
        if vi.name not in feed:
            continue
        dims = vi.type.tensor_type.shape.dim
        for d, size in zip(dims, feed[vi.name].shape, strict=True):
            d.ClearField("dim_param")
            d.dim_value = int(size)


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    shapes[node.output[0]] = tuple(a.t.dims)
    for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if all(d is not None for d in dims):
            shapes[vi.name] = tuple(int(d) for d in dims)  # type: ignore[arg-type]
    return shapes


def _runtime_shapes(
    model: onnx.ModelProto, names: list[str], feed: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, ...]]:
    """Run the model once with `names` exposed as outputs and read their shapes."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = sess.run(names, dict(feed))
    return {n: tuple(np.shape(o)) for n, o in zip(names, outs, strict=True)}


def _node_flops(node: onnx.NodeProto, s: Mapping[str, tuple[int, ...]]) -> int:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Conv":
        out, w = s[node.output[0]], s[node.input[1]]
        return 2 * math.prod(out) * math.prod(w[1:])  # w: [Cout, Cin/group, *k]
    if node.op_type == "ConvTranspose":
        x, w = s[node.input[0]], s[node.input[1]]
        return 2 * math.prod(x) * math.prod(w[1:])  # each input pixel scatters Cout/g * k
    if node.op_type == "MatMul":
        a, out = s[node.input[0]], s[node.output[0]]
        return 2 * math.prod(out) * a[-1]
    if node.op_type == "Gemm":
        a, out = s[node.input[0]], s[node.output[0]]
        k = a[0] if attrs.get("transA", 0) else a[1]
        return 2 * math.prod(out) * k
    if node.op_type in _GATES:
        x, w = s[node.input[0]], s[node.input[1]]
        steps, batch = (x[1], x[0]) if attrs.get("layout", 0) else (x[0], x[1])
        directions, gated, inputs = w
        hidden = gated // _GATES[node.op_type]
        return 2 * steps * batch * directions * gated * (inputs + hidden)
    return 0


def _needed(node: onnx.NodeProto) -> list[str]:
    if node.op_type in ("Conv", "ConvTranspose"):
        return [node.input[0], node.input[1], node.output[0]]
    if node.op_type in _GATES:
        return [node.input[0], node.input[1]]
    return [node.input[0], node.output[0]]


def count_flops(model_path: Path, feed: Mapping[str, np.ndarray]) -> FlopCount:
    """FLOPs of one inference of `model_path` on `feed` (top-level graph; no subgraphs)."""
    model = onnx.load(str(model_path))
    _fix_inputs(model, feed)
    try:
        model = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - partial inference is fine, the runtime fills gaps
        pass
    shapes = _static_shapes(model)
    counted = [n for n in model.graph.node if n.op_type in COUNTED]
    missing = sorted({t for n in counted for t in _needed(n) if t and t not in shapes})
    from_rt = 0
    if missing:
        shapes.update(_runtime_shapes(model, missing, feed))
        from_rt = len(missing)
    result = FlopCount(total=0, shapes_from_runtime=from_rt)
    for node in counted:
        try:
            f = _node_flops(node, shapes)
        except (KeyError, IndexError):
            result.skipped.append(node.name or node.op_type)
            continue
        result.by_op[node.op_type] = result.by_op.get(node.op_type, 0) + f
        result.total += f
        result.nodes += 1
    return result
