"""Walking an ONNX graph with its subgraphs (If branches, Loop and Scan bodies), reading the
value of a constant tensor in it, the types and shapes shape inference finds for its
tensors, and the element types its weights are held in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "constant",
    "constant_tensors",
    "defined",
    "elem_types",
    "float_weights",
    "graphs",
    "nodes",
    "shapes",
    "subgraphs",
    "value_infos",
    "weights_precision",
]


def subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    """A node's own subgraphs (If branches, a Loop or Scan body), not theirs."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            yield attr.g
        elif attr.type == onnx.AttributeProto.GRAPHS:
            yield from attr.graphs


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph`, then every subgraph of its nodes, depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from graphs(sub)


def nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, each followed by its subgraphs' nodes (depth first)."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from nodes(sub)


def value_infos(model: onnx.ModelProto, *, data_prop: bool = False) -> dict[str, onnx.TypeProto]:
    """Each tensor's type (element type and shape) as ONNX shape inference states it, or,
    where inference fails, as the model's own value infos do: graph inputs, outputs and
    value infos, of the main graph and then its subgraphs. A name stated twice keeps its
    first statement: a graph input's declared type, and the main graph's over a subgraph's
    tensor of the same name. `data_prop` lets inference compute shapes from shape
    arithmetic (Shape, Gather, Concat ... feeding a Reshape)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    except Exception:  # noqa: BLE001 - the value infos the model states are all there is
        inferred = model
    types: dict[str, onnx.TypeProto] = {}
    for graph in graphs(inferred.graph):
        for info in (*graph.input, *graph.output, *graph.value_info):
            types.setdefault(info.name, info.type)
    return types


def shapes(model: onnx.ModelProto, *, data_prop: bool = False) -> dict[str, list[int | str]]:
    """Each tensor of known rank's dims (`value_infos`), initializers included: a number, a
    symbolic dim's name, or 0 where the dim is neither."""
    found = {
        name: [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
        for name, t in _tensor_types(value_infos(model, data_prop=data_prop))
        if t.HasField("shape")
    }
    for graph in graphs(model.graph):
        found.update({t.name: list(t.dims) for t in graph.initializer})
    return found


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Each tensor's element type (an onnx.TensorProto data type) where `value_infos` or an
    initializer states it, over the main graph and its subgraphs."""
    types = {name: t.elem_type for name, t in _tensor_types(value_infos(model)) if t.elem_type}
    for graph in graphs(model.graph):
        types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _tensor_types(
    types: dict[str, onnx.TypeProto],
) -> Iterator[tuple[str, onnx.TypeProto.Tensor]]:
    """The tensors among `types` (sequences, maps and optionals aside)."""
    for name, t in types.items():
        if t.HasField("tensor_type"):
            yield name, t.tensor_type


def defined(graph: onnx.GraphProto) -> set[str]:
    """The names `graph` itself defines (its nodes' outputs, its inputs, its initializers):
    inside it they shadow the outer tensors of the same name."""
    names = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    return names | {t.name for t in graph.initializer}


def constant(graph: onnx.GraphProto, name: str) -> np.ndarray | None:
    """An initializer's or a Constant node's value in `graph` (None: computed, or kept in
    external data)."""
    for t in graph.initializer:
        if t.name == name:
            return None if t.external_data else numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name and len(node.attribute) == 1:
            attr = node.attribute[0]
            return numpy_helper.to_array(attr.t) if attr.name == "value" else None
    return None


_HALF: dict[int, Literal["fp16", "bf16"]] = {
    onnx.TensorProto.FLOAT16: "fp16",
    onnx.TensorProto.BFLOAT16: "bf16",
}
_FLOATS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, *_HALF)


def constant_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The model's constant tensors in every graph: initializers, and Constant nodes' values
    (paddle2onnx's models hold every weight in a Constant, TorchScript's every shape)."""
    tensors = [t for g in graphs(model.graph) for t in g.initializer]
    tensors += [
        a.t
        for n in nodes(model.graph)
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value" and a.type == onnx.AttributeProto.TENSOR
    ]
    return tensors


def float_weights(model: onnx.ModelProto) -> dict[int, int]:
    """Elements of the model's float weights (constant_tensors), by element type."""
    counts = dict.fromkeys(_FLOATS, 0)
    for t in constant_tensors(model):
        if t.data_type in counts:
            counts[t.data_type] += int(np.prod(t.dims, dtype=np.int64))
    return counts


def weights_precision(model: onnx.ModelProto) -> Literal["fp16", "bf16"] | None:
    """fp16/bf16 when most of the model's float weights (by element count) are, else None."""
    counts = float_weights(model)
    half = max(_HALF, key=lambda d: counts[d])
    return _HALF[half] if counts[half] * 2 > sum(counts.values()) else None
