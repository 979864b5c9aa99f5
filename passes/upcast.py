"""An fp16 model as float32, for the int8 passes: calibrators and quantizers work on float32
graphs (ONNX Runtime's refuses fp16 weights, NNCF's collects float32 statistics), and many
models are published only in fp16 (Hugging Face exports, `convert_float_to_float16` with or
without `keep_io_types`).

Widening fp16 to float32 is exact, so the float32 copy computes what the fp16 model does at
least as precisely. What changes: fp16 initializers and tensor attributes (Constant,
ConstantOfShape) become float32, every Cast/CastLike/dtype attribute to fp16 becomes float32,
and intermediate type annotations follow. The graph's interface is kept: an fp16 graph input
is Cast to float32 where it enters, an fp16 output is Cast back to fp16 where it leaves, so
the quantized model takes and gives what the source does. Subgraphs (If, Loop, Scan) are
widened the same way.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.core.graphs import elem_types, graphs
from passes.base import PassContext, half_precision
from passes.simplify import SimplifyConfig, SimplifyPass

__all__ = ["UPCAST_NOTE", "float32_copy", "widen_for_int8"]

UPCAST_NOTE = (
    "the source's fp16 weights and compute were widened to float32 for calibration and "
    "quantization (exact; graph inputs and outputs kept fp16)"
)

_F16, _F32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
# attributes that name an element type
_TYPE_ATTRS = ("to", "dtype")


def widen_for_int8(
    model: onnx.ModelProto, ctx: PassContext
) -> tuple[onnx.ModelProto, dict[str, str]]:
    """What an int8 pass quantizes (its `_prepare`): an fp16 model widened to float32 and
    simplified again, with the record's `upcast` saying so; any other model as it is.
    onnxsim folds BatchNormalization into Conv in float32 graphs only, so an fp16 model
    came through the simplify pass with them apart (an fp16 PP-LCNet's ONNX Runtime int8 ran
    at half the speed of its float32 original's)."""
    if half_precision(model) != "fp16":
        return model, {}
    wide = float32_copy(model)
    simplified = SimplifyPass(SimplifyConfig())(wide, ctx)
    if simplified.skipped:
        return wide, {"upcast": f"{UPCAST_NOTE}; not simplified again: {simplified.skipped}"}
    return simplified.model, {"upcast": f"{UPCAST_NOTE}; simplified again (onnxsim) as float32"}


def float32_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float32 where it computed in fp16, with its interface."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    weights = {t.name for t in graph.initializer}  # IR < 4 lists them as inputs too
    inputs = [vi for vi in graph.input if _elem(vi) == _F16 and vi.name not in weights]
    outputs = [vi for vi in graph.output if _elem(vi) == _F16]
    for g in graphs(graph):
        _widen(g)
    taken = _names(graph)
    entry = []
    for vi in inputs:
        wide = _fresh(f"{vi.name}__fp32", taken)
        _rename_uses(graph, vi.name, wide)
        entry.append(onnx.helper.make_node("Cast", [vi.name], [wide], name=wide, to=_F32))
    exit_ = []
    for vi in outputs:
        wide = _fresh(f"{vi.name}__fp32", taken)
        _rename_uses(graph, vi.name, wide)  # its producer and any consumer inside the graph
        for node in graph.node:
            node.output[:] = [wide if o == vi.name else o for o in node.output]
        exit_.append(onnx.helper.make_node("Cast", [wide], [vi.name], name=vi.name, to=_F16))
    # annotations of the interface's own names now describe the widened tensors: drop them
    boundary = {vi.name for vi in (*inputs, *outputs)}
    kept_info = [vi for vi in graph.value_info if vi.name not in boundary]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    nodes = [*entry, *graph.node, *exit_]
    del graph.node[:]
    graph.node.extend(nodes)
    # the interface as it was: fp16 in, fp16 out (the loop above widened every annotation)
    for vi in (*inputs, *outputs):
        vi.type.tensor_type.elem_type = _F16
    _drop_noop_casts(out)
    return out


def _drop_noop_casts(model: onnx.ModelProto) -> None:
    """Remove the main graph's Casts that widening left float32 -> float32 (in place): the
    converter's Casts around its fp16 region and its block-listed ops. Left in, they sit
    between quantizable ops (ONNX Runtime's int8 model ran at 0.4x the fp16 reference), and
    NNCF's own Cast elimination dropped one that made a graph output, breaking the model."""
    graph = model.graph
    types = elem_types(model)
    outputs = {vi.name for vi in graph.output}
    fixed = outputs | {vi.name for vi in graph.input}
    uses: dict[str, int] = {}
    for g in graphs(graph):
        for node in g.node:
            for i in node.input:
                uses[i] = uses.get(i, 0) + 1
    producer = {o: n for n in graph.node for o in n.output}
    keep = []
    for node in graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type != "Cast" or to != _F32 or types.get(node.input[0]) != _F32:
            keep.append(node)
            continue
        src, dst = node.input[0], node.output[0]
        if dst not in outputs:
            _rename_uses(graph, dst, src)
        elif src in producer and src not in fixed and uses.get(src) == 1:
            made = producer[src]
            made.output[:] = [dst if o == src else o for o in made.output]
        else:
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _elem(vi: onnx.ValueInfoProto) -> int:
    return vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0


def _wide(t: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name)


def _widen(graph: onnx.GraphProto) -> None:
    """fp16 -> float32 in one graph's initializers, attributes and annotations (in place)."""
    for i, t in enumerate(graph.initializer):
        if t.data_type == _F16:
            graph.initializer[i].CopyFrom(_wide(t))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _F16:
                attr.t.CopyFrom(_wide(attr.t))
            elif attr.name in _TYPE_ATTRS and attr.type == onnx.AttributeProto.INT:
                attr.i = _F32 if attr.i == _F16 else attr.i
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if _elem(vi) == _F16:
            vi.type.tensor_type.elem_type = _F32


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {vi.name for vi in (*graph.input, *graph.output, *graph.value_info)}
    names |= {t.name for t in graph.initializer}
    for g in graphs(graph):
        for node in g.node:
            names.update((*node.input, *node.output, node.name))
    return names


def _fresh(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node input named `old`, in `graph` and the subgraphs that see it, reads `new`."""
    for g in graphs(graph):
        for node in g.node:
            node.input[:] = [new if i == old else i for i in node.input]
