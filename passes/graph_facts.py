"""What a graph contains, for passes whose `auto` settings depend on it.

`fuse` turns on ONNX Runtime's transformer fusions and `quantize` picks dynamic int8 from
these facts, so both passes follow one documented rule (docs/passes.md) instead of two.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

__all__ = ["GraphFacts", "graph_facts"]

RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
FUSED_ATTENTION_OPS = frozenset(
    {"Attention", "MultiHeadAttention", "GroupQueryAttention", "PackedAttention"}
)
# Ops that only move or reshape values: tf2onnx's Keras MultiHeadAttention reshapes and
# squeezes the scores around its Softmax
_SHAPE_ONLY = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast"})
# Ops that may sit between QK^T and Softmax, or between Softmax and the V product: torch's
# dynamo exporter (the default since torch 2.9) guards the probabilities with
# Where(IsNaN(p), 0, p) before the V product
_SCORE_ELEMENTWISE = frozenset({"Add", "Mul", "Div", "Where", "Sub"}) | _SHAPE_ONLY
_PASS_THROUGH = frozenset({"Dropout", "Where"}) | _SHAPE_ONLY


@dataclass(frozen=True)
class GraphFacts:
    """Counts and node names the `auto` rules read; `describe()` goes into pass records."""

    op_counts: dict[str, int] = field(default_factory=dict)
    attention_softmax: tuple[str, ...] = ()  # Softmax nodes in MatMul->Softmax->MatMul chains
    fused_attention: tuple[str, ...] = ()  # com.microsoft Attention-like nodes
    recurrent: tuple[str, ...] = ()
    decomposed_layernorm: int = 0  # ReduceMean -> Sub -> ... -> ReduceMean chains
    erf: int = 0  # exact GELU is built from Erf

    @property
    def has_attention(self) -> bool:
        return bool(self.attention_softmax or self.fused_attention)

    @property
    def weighted_matmuls(self) -> int:
        return self.op_counts.get("MatMul", 0) + self.op_counts.get("Gemm", 0)

    @property
    def convs(self) -> int:
        return self.op_counts.get("Conv", 0) + self.op_counts.get("ConvTranspose", 0)

    def transformer_like(self) -> bool:
        """Worth running ORT's transformer fusions: attention, LayerNorm or GELU patterns."""
        return self.has_attention or self.decomposed_layernorm > 0 or self.erf > 0

    def prefers_dynamic_int8(self) -> bool:
        """Recurrent, or attention with at least as many MatMul/Gemm as Conv nodes."""
        if self.recurrent:
            return True
        return self.has_attention and self.weighted_matmuls >= self.convs

    def describe(self) -> dict[str, object]:
        return {
            "attention_blocks": len(self.attention_softmax) + len(self.fused_attention),
            "recurrent_nodes": list(self.recurrent),
            "decomposed_layernorm": self.decomposed_layernorm,
            "erf": self.erf,
            "matmul_gemm": self.weighted_matmuls,
            "conv": self.convs,
        }


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output if out}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                out.setdefault(name, []).append(node)
    return out


def _reaches_back(
    start: str, producers: dict[str, onnx.NodeProto], target: str, through: Iterable[str]
) -> bool:
    """Does `start` come from a `target` op through a chain of `through` ops (depth <= 6)?"""
    allowed = frozenset(through)
    frontier, depth = [start], 0
    while frontier and depth < 6:
        nxt: list[str] = []
        for name in frontier:
            node = producers.get(name)
            if node is None:
                continue
            if node.op_type == target:
                return True
            if node.op_type in allowed:
                nxt.extend(i for i in node.input if i)
        frontier, depth = nxt, depth + 1
    return False


def _feeds_forward(
    start: str, consumers: dict[str, list[onnx.NodeProto]], target: str, through: Iterable[str]
) -> bool:
    allowed = frozenset(through)
    frontier, depth = [start], 0
    while frontier and depth < 4:
        nxt: list[str] = []
        for name in frontier:
            for node in consumers.get(name, []):
                if node.op_type == target:
                    return True
                if node.op_type in allowed:
                    nxt.extend(node.output)
        frontier, depth = nxt, depth + 1
    return False


def _decomposed_layernorms(
    graph: onnx.GraphProto, consumers: dict[str, list[onnx.NodeProto]]
) -> int:
    """ReduceMean(x) feeding Sub(x, mean) whose result reaches a second ReduceMean."""
    count = 0
    for node in graph.node:
        if node.op_type != "ReduceMean":
            continue
        subs = [c for c in consumers.get(node.output[0], []) if c.op_type == "Sub"]
        if any(
            _feeds_forward(s.output[0], consumers, "ReduceMean", {"Pow", "Mul", "Cast"})
            for s in subs
        ):
            count += 1
    return count


def graph_facts(model: onnx.ModelProto) -> GraphFacts:
    """Facts about the main graph (subgraphs of If/Loop are not searched)."""
    graph = model.graph
    producers, consumers = _producers(graph), _consumers(graph)
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    attention = tuple(
        node.name or node.output[0]
        for node in graph.node
        if node.op_type == "Softmax"
        and _reaches_back(node.input[0], producers, "MatMul", _SCORE_ELEMENTWISE)
        and _feeds_forward(node.output[0], consumers, "MatMul", _PASS_THROUGH)
    )
    return GraphFacts(
        op_counts=dict(sorted(counts.items())),
        attention_softmax=attention,
        fused_attention=tuple(
            n.name or n.output[0] for n in graph.node if n.op_type in FUSED_ATTENTION_OPS
        ),
        recurrent=tuple(n.name or n.output[0] for n in graph.node if n.op_type in RECURRENT_OPS),
        decomposed_layernorm=_decomposed_layernorms(graph, consumers),
        erf=counts.get("Erf", 0),
    )
