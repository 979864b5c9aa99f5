"""A source quantized in QOperator form (QLinearConv, QLinearMatMul, com.microsoft's QGemm,
QLinearAdd, QLinearGlobalAveragePool...) rewritten into QDQ form for OpenVINO's ONNX frontend.

OpenVINO 2026.4 converts QDQ models well (every DequantizeLinear becomes the dequantization
its low-precision transformations fuse back into int8 kernels), but its QLinearConv needs a
static input rank and fails on per-channel depthwise weights, and it has no rule for
com.microsoft's QLinear ops at all: the ONNX model zoo's int8 models and ONNX Runtime's
QOperator output did not convert. Each such node becomes DequantizeLinear on its quantized
inputs, the float op, and QuantizeLinear to its output's scale and zero point: the same
arithmetic up to float rounding (int32 biases are folded to float with their scale
x_scale * w_scale). A node whose scales are not constants, or whose form this module does not
know (channels_last pooling, alpha != 1 on QGemm), is left as it is and named in the result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["QdqRewrite", "operator_form_ops", "to_qdq"]

_MS = "com.microsoft"
# op -> float op, for the ops whose inputs are (X, X_scale, X_zp, Y_scale, Y_zp)
_UNARY = {
    "QLinearSigmoid": "Sigmoid",
    "QLinearLeakyRelu": "LeakyRelu",
    "QLinearGlobalAveragePool": "GlobalAveragePool",
    "QLinearAveragePool": "AveragePool",
    "QLinearSoftmax": "Softmax",
}
# op -> float op, for (A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp)
_BINARY = {"QLinearAdd": "Add", "QLinearMul": "Mul"}
_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_REWRITTEN = {
    ("", "QLinearConv"),
    ("", "QLinearMatMul"),
    (_MS, "QGemm"),
    (_MS, "QLinearConcat"),
    *((_MS, op) for op in (*_UNARY, *_BINARY)),
}


@dataclass
class QdqRewrite:
    """What `to_qdq` did: the op types it rewrote (with counts) and the nodes it left."""

    rewritten: Counter[str] = field(default_factory=Counter)
    kept: list[str] = field(default_factory=list)

    def note(self) -> str:
        shown = ", ".join(f"{n} {op}" for op, n in sorted(self.rewritten.items()))
        note = f"operator-form int8 rewritten as QuantizeLinear/DequantizeLinear ({shown})"
        if self.kept:
            note += f"; left as they were: {self.kept[:5]}"
        return note


def operator_form_ops(model: onnx.ModelProto) -> Counter[str]:
    """The main graph's ops this module rewrites, by type."""
    return Counter(n.op_type for n in model.graph.node if (n.domain, n.op_type) in _REWRITTEN)


def to_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, QdqRewrite]:
    """A copy of `model` (loaded with its external data) with its QOperator nodes in QDQ form."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    rewriter = _Rewriter(graph, _opset(out))
    nodes: list[onnx.NodeProto] = []
    result = QdqRewrite()
    replaced: set[str] = set()  # the inputs of rewritten nodes (int32 biases among them)
    for node in graph.node:
        made = rewriter.rewrite(node) if (node.domain, node.op_type) in _REWRITTEN else None
        if made is None:
            nodes.append(node)
            if (node.domain, node.op_type) in _REWRITTEN:
                result.kept.append(node.name or node.output[0])
            continue
        nodes.extend(made)
        replaced.update(node.input)
        result.rewritten[node.op_type] += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(rewriter.new_initializers)
    read = _read(graph) | {o.name for o in graph.output}
    unread = [t for t in graph.initializer if t.name in replaced and t.name not in read]
    for t in unread:
        graph.initializer.remove(t)
    return out, result


def _read(graph: onnx.GraphProto) -> set[str]:
    """Every value a node of `graph` or of its subgraphs reads."""
    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.type in _GRAPH_ATTRS else []:
                names |= _read(sub)
    return names


def _inputs(node: onnx.NodeProto, count: int) -> list[str]:
    """`node`'s input names, "" for the optional ones it leaves out, `count` of them."""
    names: list[str] = list(node.input)
    return names + [""] * (count - len(names))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


class _Rewriter:
    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.consts: dict[str, np.ndarray] = {}
        for t in graph.initializer:
            self.consts[t.name] = numpy_helper.to_array(t)
        for n in graph.node:
            if n.op_type == "Constant" and n.domain == "" and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.names = set(self.consts) | {o for n in graph.node for o in n.output}
        self.names |= {i.name for i in graph.input}
        self.opset = opset
        self.new_initializers: list[onnx.TensorProto] = []
        self._dq: dict[tuple[str, str, str], str] = {}
        self._handlers: dict[str, Callable[[onnx.NodeProto], list[onnx.NodeProto] | None]] = {
            "QLinearConv": self._conv,
            "QLinearMatMul": self._matmul,
            "QGemm": self._gemm,
            "QLinearConcat": self._concat,
        }

    def rewrite(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """`node` as DequantizeLinear, float op and QuantizeLinear, or None (left as it is:
        whatever it began to make is dropped, so later nodes never read a dropped value)."""
        kept = (dict(self._dq), set(self.names), len(self.new_initializers))
        if node.op_type in _UNARY:
            made = self._unary(node)
        elif node.op_type in _BINARY:
            made = self._binary(node)
        else:
            made = self._handlers[node.op_type](node)
        if made is None:
            self._dq, self.names = kept[0], kept[1]
            for dropped in self.new_initializers[kept[2] :]:
                del self.consts[dropped.name]
            del self.new_initializers[kept[2] :]
        return made

    # ------------------------------------------------------------------ building blocks

    def _name(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def _const(self, base: str, value: np.ndarray) -> str:
        name = self._name(base)
        self.new_initializers.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name

    def _scalar(self, name: str) -> bool:
        """Whether `name` is a constant holding one value (a per-tensor scale or zero point)."""
        return name in self.consts and self.consts[name].size == 1

    def _dequantize(
        self, x: str, scale: str, zp: str, nodes: list[onnx.NodeProto], axis: int | None = None
    ) -> str | None:
        """`x` in float, from one DequantizeLinear per (tensor, scale, zero point) in the
        graph; None where a scale per channel has no axis or no constant to apply it to."""
        key = (x, scale, zp)
        if key in self._dq:
            return self._dq[key]
        out = self._name(f"{x}_dequantized")
        if self._scalar(scale):
            inputs = [x, scale] + ([zp] if zp else [])
            nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=out))
        elif axis is None or scale not in self.consts:
            return None
        elif self.opset >= 13:
            inputs = [x, scale] + ([zp] if zp else [])
            nodes.append(helper.make_node("DequantizeLinear", inputs, [out], name=out, axis=axis))
        elif x in self.consts and (not zp or zp in self.consts):
            nodes.extend(self._weights_by_channel(x, scale, zp, axis, out))
        else:
            return None
        self._dq[key] = out
        return out

    def _weights_by_channel(
        self, w: str, scale: str, zp: str, axis: int, out: str
    ) -> list[onnx.NodeProto]:
        """Constant weights with a scale per channel before opset 13 (whose DequantizeLinear
        has no axis): Cast, Sub of the zero points, Mul by the scales, broadcast along `axis`:
        the Convert-Subtract-Multiply OpenVINO itself makes of a DequantizeLinear."""
        rank = self.consts[w].ndim
        shape = [1] * rank
        shape[axis % rank] = -1
        cast = self._name(f"{w}_float")
        nodes = [helper.make_node("Cast", [w], [cast], name=cast, to=onnx.TensorProto.FLOAT)]
        if zp and np.any(self.consts[zp]):
            zero = self._const(f"{zp}_float", self.consts[zp].astype(np.float32).reshape(shape))
            shifted = self._name(f"{w}_shifted")
            nodes.append(helper.make_node("Sub", [cast, zero], [shifted], name=shifted))
            cast = shifted
        scales = self._const(f"{scale}_by_channel", self.consts[scale].reshape(shape))
        nodes.append(helper.make_node("Mul", [cast, scales], [out], name=out))
        return nodes

    def _requantized(
        self, float_out: str, out: str, scale: str, zp: str, like_zp: str
    ) -> onnx.NodeProto:
        """QuantizeLinear of `float_out` to the original output `out`: at its zero point, or
        at a zero of `like_zp`'s type where the op left it out (the contrib ops' default)."""
        if not zp:
            dtype = self.consts[like_zp].dtype if like_zp in self.consts else np.dtype(np.uint8)
            zp = self._const(f"{out}_zero_point", np.zeros((), dtype))
        name = self._name(f"{out}_quantize")
        return helper.make_node("QuantizeLinear", [float_out, scale, zp], [out], name=name)

    # ------------------------------------------------------------------ ops

    def _conv(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        x, xs, xz, w, ws, wz, ys, yz, bias = _inputs(node, 9)
        nodes: list[onnx.NodeProto] = []
        xf = self._dequantize(x, xs, xz, nodes)
        wf = self._dequantize(w, ws, wz, nodes, axis=0)
        if xf is None or wf is None or not self._scalar(ys):
            return None
        inputs = [xf, wf]
        if bias:
            if bias not in self.consts or xs not in self.consts or ws not in self.consts:
                return None
            scale = self.consts[xs].astype(np.float64) * self.consts[ws].astype(np.float64)
            folded = self.consts[bias].astype(np.float64) * scale.reshape(-1)
            inputs.append(self._const(f"{bias}_float", folded.astype(np.float32)))
        y = self._name(f"{node.output[0]}_float")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("Conv", inputs, [y], name=node.name or y, **attrs))
        nodes.append(self._requantized(y, node.output[0], ys, yz, xz))
        return nodes

    def _matmul(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
        nodes: list[onnx.NodeProto] = []
        af = self._dequantize(a, as_, az, nodes)
        bf = self._dequantize(b, bs, bz, nodes, axis=-1)  # per column of B
        if af is None or bf is None or not self._scalar(ys):
            return None
        y = self._name(f"{node.output[0]}_float")
        nodes.append(helper.make_node("MatMul", [af, bf], [y], name=node.name or y))
        nodes.append(self._requantized(y, node.output[0], ys, yz, az))
        return nodes

    def _gemm(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """com.microsoft QGemm: Y = A' B' + C, with C an int32 bias at scale a_s * b_s;
        Y quantized when y_scale is given, else float."""
        a, as_, az, b, bs, bz, c, ys, yz = _inputs(node, 9)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0:
            return None
        nodes: list[onnx.NodeProto] = []
        af = self._dequantize(a, as_, az, nodes)
        bf = self._dequantize(b, bs, bz, nodes, axis=0 if attrs.get("transB", 0) else 1)
        if af is None or bf is None or (ys and not self._scalar(ys)):
            return None
        inputs = [af, bf]
        if c:
            if c not in self.consts or as_ not in self.consts or bs not in self.consts:
                return None
            scale = self.consts[as_].astype(np.float64) * self.consts[bs].astype(np.float64)
            folded = self.consts[c].astype(np.float64) * scale.reshape(-1)
            inputs.append(self._const(f"{c}_float", folded.astype(np.float32)))
        out = node.output[0]
        y = self._name(f"{out}_float") if ys else out
        gemm = {k: v for k, v in attrs.items() if k in ("transA", "transB")}
        nodes.append(helper.make_node("Gemm", inputs, [y], name=node.name or y, **gemm))
        if ys:
            nodes.append(self._requantized(y, out, ys, yz, az))
        return nodes

    def _unary(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        x, xs, xz, ys, yz = _inputs(node, 5)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.pop("channels_last", 0):
            return None
        if node.op_type == "QLinearSoftmax":
            # its `opset` attribute says which Softmax its axis means (before 13: the axes
            # from `axis` on, flattened); the last axis means the same in both
            attrs["axis"] = attrs.get("axis", -1)  # its default; Softmax-11's is 1
            if (attrs.pop("opset", self.opset) >= 13) != (self.opset >= 13) and attrs["axis"] != -1:
                return None
        nodes: list[onnx.NodeProto] = []
        xf = self._dequantize(x, xs, xz, nodes)
        if xf is None or not self._scalar(ys):
            return None
        y = self._name(f"{node.output[0]}_float")
        op = _UNARY[node.op_type]
        nodes.append(helper.make_node(op, [xf], [y], name=node.name or y, **attrs))
        nodes.append(self._requantized(y, node.output[0], ys, yz, xz))
        return nodes

    def _binary(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        a, as_, az, b, bs, bz, ys, yz = _inputs(node, 8)
        nodes: list[onnx.NodeProto] = []
        af = self._dequantize(a, as_, az, nodes)
        bf = self._dequantize(b, bs, bz, nodes)
        if af is None or bf is None or not self._scalar(ys):
            return None
        y = self._name(f"{node.output[0]}_float")
        op = _BINARY[node.op_type]
        nodes.append(helper.make_node(op, [af, bf], [y], name=node.name or y))
        nodes.append(self._requantized(y, node.output[0], ys, yz, az))
        return nodes

    def _concat(self, node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """QLinearConcat(Y_scale, Y_zp, then (X, X_scale, X_zp) per input)."""
        ys, yz, *triples = _inputs(node, len(node.input))
        if len(triples) % 3 or not self._scalar(ys):
            return None
        nodes: list[onnx.NodeProto] = []
        floats = []
        for i in range(0, len(triples), 3):
            xf = self._dequantize(triples[i], triples[i + 1], triples[i + 2], nodes)
            if xf is None:
                return None
            floats.append(xf)
        y = self._name(f"{node.output[0]}_float")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("Concat", floats, [y], name=node.name or y, **attrs))
        nodes.append(self._requantized(y, node.output[0], ys, yz, triples[2]))
        return nodes
