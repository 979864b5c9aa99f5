"""Walking an ONNX graph with its subgraphs (If branches, Loop and Scan bodies), and reading
the value of a constant tensor in it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["constant", "defined", "graphs", "nodes", "subgraphs"]


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
