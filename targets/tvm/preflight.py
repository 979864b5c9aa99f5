"""Which ONNX ops TVM's Relax frontend cannot import, found before any build starts.

The frontend's own converter table is the source of truth (read lazily from tvm); a fixed
set of ops known to be missing in apache-tvm 0.27 backs it up so the answer is the same
when the table cannot be read. Subgraphs (If/Loop/Scan bodies) are searched too.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx

__all__ = ["KNOWN_UNSUPPORTED", "unsupported_ops"]

# Missing from the Relax ONNX frontend in apache-tvm 0.27.
KNOWN_UNSUPPORTED = frozenset(
    {
        "LSTM",
        "GRU",
        "RNN",
        "Loop",
        "Scan",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearConcat",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearSoftmax",
    }
)
# Handled by the frontend outside its converter table.
_HANDLED_DIRECTLY = frozenset({"If"})


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def _converter_names() -> frozenset[str] | None:
    try:
        from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map
    except ImportError:
        return None
    return frozenset(_get_convert_map())


def unsupported_ops(model: onnx.ModelProto) -> dict[str, str]:
    """Op type -> name of the first node using it, for every op the frontend cannot import."""
    known = _converter_names()
    bad: dict[str, str] = {}
    for node in _nodes(model.graph):
        op = node.op_type
        missing = op in KNOWN_UNSUPPORTED or (
            known is not None and op not in known and op not in _HANDLED_DIRECTLY
        )
        if missing and op not in bad:
            bad[op] = node.name or f"#{op}"
    return bad
