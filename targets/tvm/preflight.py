"""Which ONNX ops TVM's Relax frontend cannot import, found before any build starts.

The frontend's own converter table is the source of truth (read lazily from tvm); a fixed
set of ops known to be missing in apache-tvm 0.27 backs it up so the answer is the same
when the table cannot be read. Subgraphs (If/Loop/Scan bodies) are searched too.
"""

from __future__ import annotations

import onnx

from compiler.core.graphs import nodes

__all__ = ["KNOWN_UNSUPPORTED", "narrow_tensors", "topological_order", "unsupported_ops"]

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
# Converted as com.microsoft's op of the name only: ONNX's own (Attention, opset 23, which
# the dynamo exporter writes for scaled_dot_product_attention) fails inside the converter
# (KeyError 'num_heads').
_CONTRIB_ONLY = frozenset({"Attention"})


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
    for node in nodes(model.graph):
        op = node.op_type
        missing = (
            op in KNOWN_UNSUPPORTED
            or (op in _CONTRIB_ONLY and node.domain in ("", "ai.onnx"))
            or (known is not None and op not in known and op not in _HANDLED_DIRECTLY)
        )
        if missing and op not in bad:
            bad[op] = node.name or f"#{op}"
    return bad


# element types below a byte or of 8-bit floats, which TVM 0.27's importer copies with the
# wrong size ("TensorCopyFromBytes: size mismatch") or does not know
_NARROW = frozenset(
    {
        onnx.TensorProto.FLOAT8E4M3FN,
        onnx.TensorProto.FLOAT8E4M3FNUZ,
        onnx.TensorProto.FLOAT8E5M2,
        onnx.TensorProto.FLOAT8E5M2FNUZ,
        onnx.TensorProto.UINT4,
        onnx.TensorProto.INT4,
        *(getattr(onnx.TensorProto, t) for t in ("FLOAT4E2M1", "UINT2", "INT2", "FLOAT8E8M0")
          if hasattr(onnx.TensorProto, t)),
    }
)  # fmt: skip


def narrow_tensors(model: onnx.ModelProto) -> dict[str, str]:
    """Element type name -> the first constant of it (an initializer or a Constant's value),
    for the types TVM cannot read: an int4-weight QDQ model's."""
    found: dict[str, str] = {}
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [
        (n.output[0], a.t)
        for n in nodes(model.graph)
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    ]
    for name, t in tensors:
        if t.data_type in _NARROW:
            found.setdefault(onnx.TensorProto.DataType.Name(t.data_type), name)
    return found


def topological_order(model: onnx.ModelProto) -> bool:
    """Sort the main graph's nodes so producers come first, in place; True if it changed.

    ONNX requires this order, ONNX Runtime tolerates its absence (converters such as the
    float16 one append Cast nodes at the end), and TVM's importer does not.
    """
    graph = model.graph
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    made = set(known)
    for n in graph.node:
        if not all(i in made for i in n.input):
            break
        made.update(n.output)
    else:
        return False  # in order already (a level-by-level sort would reorder it all the same)
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or a dangling input: leave the order to the importer
            return False
        for n in ready:
            known.update(n.output)
        ordered.extend(ready)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(nodes)
    return True
