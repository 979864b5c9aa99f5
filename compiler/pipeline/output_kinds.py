"""What each output of a model means (class scores, probabilities, an embedding, a dense map,
boxes, a state...), read off the graph where it says so and overridden by the config
(`parity.kinds`). The kind decides how parity judges the output (compiler/core/parity.py).

The graph says it through the op that makes the output, found by walking back through ops
that only move values (Reshape, Transpose, Concat, Gather, If branches, ...) and poolings:
- Softmax (or Exp / sum), LogSoftmax: probabilities over classes; one distribution per step
  for rank 3 (a logits sequence); a per-pixel distribution for rank >= 4 (a dense map).
- Sigmoid: probabilities; for rank >= 3 a dense map (a detection map). Scaled or shifted
  (a box decoded from a sigmoid, in pixels) or times something else (SiLU) it is none;
  a product of probabilities (objectness times class score) stays one.
- LSTM / GRU / RNN: a state.
- an ArgMax, TopK or Softmax inside the graph reading the output: class scores (rank 2) or a
  logits sequence (rank 3).
- LayerNormalization (or its decomposed form), an L2 normalization, Tanh, or a pooling of
  hidden states: an embedding.
- MatMul / Gemm (+ bias), rank 2 or 3, that nothing above names: a linear head. The graph
  cannot tell class logits (ResNet's Gemm) from a regression (face landmarks, a pose, a
  box's offsets, a frame of mel bins): it is judged by decided top-1 agreement and by its
  values (L2 error and cosine) both, so an artifact that keeps every argmax but moves every
  coordinate fails. `parity.kinds` names it where the user knows (class_scores: top-1 only).
  Beside an output the graph shows to be the model's class distribution (a Softmax, or
  scores an ArgMax reads) a linear head is a regression beside the classifier (MTCNN's ONet:
  face/not-face probabilities beside 4 box offsets and 10 landmark coordinates): it stays
  unknown (`other`: L2 error and cosine), whose argmax means nothing.
- the shape: [.., 4] boxes at rank >= 3; rank >= 4 dense maps; an output shaped like an
  input (rank <= 3) is a recurrent state fed back.
Anything else stays unknown and is judged as `other`.

Outputs a random draw reaches (RandomNormal/Uniform(Like), Multinomial, Bernoulli, a Dropout
in training mode, in any body too) are `sampled`, whatever they would be otherwise: two runs of
the reference differ there (a VAE's sample, a TTS model's noise), and parity compares their
distribution, not their values (compiler/core/parity.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import onnx
from onnx import numpy_helper

from compiler.core.contract import Contract, OutputKind, TensorSpec
from compiler.core.errors import ConfigError
from compiler.core.graphs import nodes, subgraphs
from compiler.core.quantized import QDQ_OPS

__all__ = ["infer_output_kinds", "sampled_outputs", "with_output_kinds"]

# ops whose output holds (a selection of) the values of their first input
_MOVE = frozenset(
    {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Cast", "CastLike",
     "Expand", "Slice", "Gather", "GatherElements", "GatherND", "Split", "Pad", "Tile",
     "Dropout", "DepthToSpace", "SpaceToDepth",
     # an already-quantized model's values pass through (de)quantization unchanged in kind
     "QuantizeLinear", "DequantizeLinear"}
)  # fmt: skip
_POOL = frozenset(
    {"ReduceMean", "ReduceMax", "ReduceMin", "GlobalAveragePool", "GlobalMaxPool", "MaxPool",
     "AveragePool"}
)  # fmt: skip
_RECURRENT = frozenset({"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"})
_LINEAR = frozenset(
    {"MatMul", "Gemm", "MatMulInteger", "QGemm", "FusedMatMul", "QLinearMatMul",
     "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
)  # fmt: skip
_NORM = frozenset({"LayerNormalization", "LpNormalization", "SkipLayerNormalization", "Tanh"})
_SPATIAL = frozenset(
    {"Conv", "ConvTranspose", "Resize", "Upsample", "BatchNormalization", "ConvInteger",
     "QLinearConv"}
)  # fmt: skip
# ops that draw random numbers: outputs they reach are `sampled`
_RANDOM = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
     "Bernoulli"}
)  # fmt: skip
_PROBABILITY = frozenset({"sigmoid", "softmax"})  # families whose values are probabilities
_CLASS_READERS = frozenset({"ArgMax", "ArgMin", "TopK", "Softmax", "LogSoftmax", "QLinearSoftmax"})
_FLOAT = frozenset({"float16", "float32", "float64", "bfloat16"})
_MAX_STEPS = 256


@dataclass(frozen=True)
class _Origin:
    node: onnx.NodeProto
    producers: Mapping[str, onnx.NodeProto]  # of the graph the node is in
    opset: int
    pooled: bool


class _Walker:
    """Finds the ops an output's values come from, through value-moving ops and If branches."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def origins(self, graph: onnx.GraphProto, name: str) -> list[_Origin]:
        found: list[_Origin] = []
        stack = [(_producers(graph, {}), name, False)]
        seen: set[tuple[int, str]] = set()
        while stack and len(seen) < _MAX_STEPS:
            producers, value, pooled = stack.pop()
            node = producers.get(value)
            if node is None or (id(producers), value) in seen:
                continue
            seen.add((id(producers), value))
            if node.op_type == "If":
                index = list(node.output).index(value)
                for attr in node.attribute:
                    if attr.type == onnx.AttributeProto.GRAPH and index < len(attr.g.output):
                        inner = _producers(attr.g, producers)
                        stack.append((inner, attr.g.output[index].name, pooled))
            elif node.op_type == "Concat":
                stack.extend((producers, i, pooled) for i in node.input if i)
            elif node.op_type in _MOVE or node.op_type in _POOL:
                stack.append((producers, node.input[0], pooled or node.op_type in _POOL))
            else:
                found.append(_Origin(node, producers, self.opset, pooled))
        return found


def _producers(
    graph: onnx.GraphProto, outer: Mapping[str, onnx.NodeProto]
) -> dict[str, onnx.NodeProto]:
    """Value name -> producing node, in `graph` and the scopes around it."""
    return {**outer, **{o: n for n in graph.node for o in n.output if o}}


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _source(origin: _Origin, value: str) -> onnx.NodeProto | None:
    """The node that makes `value`, looking through (de)quantization: an already-quantized
    model puts a QuantizeLinear/DequantizeLinear pair between most ops."""
    node = origin.producers.get(value)
    for _ in range(_MAX_STEPS):
        if node is None or node.op_type not in QDQ_OPS:
            break
        node = origin.producers.get(node.input[0])
    return node


def _family(origin: _Origin, depth: int = 4) -> str:
    """What kind of values an op makes: softmax, logsoftmax, sigmoid, recurrent, norm, linear,
    spatial, or '' (unknown). A bias or scale (Add, Mul) takes its input's, `depth` ops deep."""
    node, op = origin.node, origin.node.op_type
    if op in _RECURRENT:
        return "recurrent"
    if op in ("Softmax", "LogSoftmax", "QLinearSoftmax"):
        return op.removeprefix("QLinear").lower()
    if op in ("Sigmoid", "HardSigmoid", "QLinearSigmoid"):
        return "sigmoid"
    if op in _NORM:
        return "norm"
    if op in _LINEAR:
        return "linear"
    if op in _SPATIAL:
        return "spatial"
    if op == "Div":
        top, bottom = (_source(origin, i) for i in node.input[:2])
        if top is not None and top.op_type == "Exp":
            return "softmax"  # exp(x - max) / sum: a softmax spelled out
        if top is not None and top.op_type == "Sub" and _reaches(origin, bottom, {"Sqrt"}):
            return "norm"  # (x - mean) / sqrt(var + eps): a LayerNorm spelled out
        if _reaches(origin, bottom, {"ReduceL2", "Sqrt", "LpNormalization"}):
            return "norm"
    if op in ("Add", "Mul") and depth > 0:
        operands = [_source(origin, value) for value in node.input]
        families = [
            ""
            if inner is None or inner.op_type == "Constant"
            else _family(_Origin(inner, origin.producers, origin.opset, False), depth - 1)
            for inner in operands
        ]
        # A probability scaled or shifted is no probability: a box decoded from a sigmoid
        # (sigmoid(x) * 64, YOLO's (2 sigmoid - 0.5 + grid) * stride) is in pixels, and x *
        # sigmoid(x) (SiLU) is an activation. Only a product of probabilities (objectness
        # times class score) stays one.
        product = op == "Mul" and all(f in _PROBABILITY for f in families)
        for family in families:
            if family and (family not in _PROBABILITY or product):
                return family
    return ""


def _reaches(origin: _Origin, node: onnx.NodeProto | None, ops: set[str], depth: int = 4) -> bool:
    """Whether `node` or one of its inputs up to `depth` ops back is one of `ops`."""
    if node is None or depth == 0:
        return False
    if node.op_type in ops:
        return True
    return any(_reaches(origin, _source(origin, i), ops, depth - 1) for i in node.input)


def _softmax_axis(origin: _Origin, rank: int) -> int:
    node = origin.node
    if node.op_type not in ("Softmax", "LogSoftmax", "QLinearSoftmax"):
        return rank - 1  # spelled out: over the last axis in every exporter seen
    axis = _attr(node, "axis", -1 if origin.opset >= 13 else 1)
    return axis + rank if axis < 0 else axis


def _readers(graph: onnx.GraphProto, name: str) -> set[str]:
    """The op types that read `name`, looking through (de)quantization both ways: a QOperator
    model's QLinearSoftmax reads the quantized tensor an output is dequantized from."""
    producers = _producers(graph, {})
    values, seen = [name], {name}
    node = producers.get(name)
    while node is not None and node.op_type in QDQ_OPS and node.input[0] not in seen:
        values.append(node.input[0])
        seen.add(node.input[0])
        node = producers.get(node.input[0])
    found: set[str] = set()
    while values:
        value = values.pop()
        for node in graph.node:
            if value not in node.input:
                continue
            if node.op_type in QDQ_OPS:
                values.extend(o for o in node.output if o not in seen)
                seen.update(node.output)
            else:
                found.add(node.op_type)
    return found


def _kind_from(spec: TensorSpec, origins: list[_Origin], read_by: set[str]) -> OutputKind | None:
    rank = len(spec.shape)
    families = {_family(o) for o in origins}
    pooled = any(o.pooled for o in origins)
    if "recurrent" in families:
        return "state"
    for fam in ("softmax", "logsoftmax"):
        if fam in families:
            origin = next(o for o in origins if _family(o) == fam)
            if rank >= 4 or _softmax_axis(origin, rank) != rank - 1:
                return "dense_map"
            if rank == 3:
                return "logits_sequence"
            return "class_scores" if fam == "logsoftmax" else "probabilities"
    if "sigmoid" in families:
        return "dense_map" if rank >= 3 else "probabilities"
    if read_by & _CLASS_READERS and rank in (2, 3):
        return "class_scores" if rank == 2 else "logits_sequence"
    if rank >= 3 and spec.shape[-1] == 4:
        return "boxes"
    if ("norm" in families or pooled) and rank in (2, 3):
        return "embedding"
    if "linear" in families and rank in (2, 3):
        return "linear_head"
    if "spatial" in families or rank >= 4:
        return "dense_map"
    return None


def _like_an_input(spec: TensorSpec, contract: Contract) -> bool:
    return 1 <= len(spec.shape) <= 3 and any(
        i.shape == spec.shape and i.dtype == spec.dtype for i in contract.inputs
    )


def _float_outputs(contract: Contract) -> Iterator[TensorSpec]:
    return (o for o in contract.outputs if o.dtype in _FLOAT)


def _samples(node: onnx.NodeProto, constants: Mapping[str, bool]) -> bool:
    """Whether `node` draws random numbers: a Random* op, Multinomial, Bernoulli, a Dropout
    whose training_mode is not a constant false, or a control-flow node whose body does."""
    if node.op_type in _RANDOM:
        return True
    if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2]:
        return constants.get(node.input[2], True)
    return any(_samples(inner, constants) for sub in subgraphs(node) for inner in sub.node)


def sampled_outputs(model: onnx.ModelProto) -> dict[str, str]:
    """Output name -> the random node it depends on ("RandomNormalLike '/RandomNormalLike'"),
    for the outputs a random draw reaches (a VAE's sample, a TTS model's noise): two runs of
    the reference itself differ there, so parity cannot compare them value by value."""
    graph = model.graph
    constants = {
        t.name: bool(numpy_helper.to_array(t).any())
        for t in graph.initializer
        if t.data_type == onnx.TensorProto.BOOL
    }
    constants |= {
        n.output[0]: bool(numpy_helper.to_array(a.t).any())
        for n in graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value" and a.t.data_type == onnx.TensorProto.BOOL
    }
    random: dict[str, str] = {}  # value -> the random node it comes from
    for node in graph.node:  # topologically sorted (the checker's order)
        why = next((random[i] for i in node.input if i in random), "")
        if not why and _samples(node, constants):
            why = f"{node.op_type} '{node.name or node.output[0]}'"
        if not why:  # a body reading a random value of the scope around it
            reads = {i for sub in subgraphs(node) for inner in nodes(sub) for i in inner.input}
            why = next((random[i] for i in reads if i in random), "")
        if why:
            random.update(dict.fromkeys((o for o in node.output if o), why))
    return {o.name: random[o.name] for o in graph.output if o.name in random}


def infer_output_kinds(model: onnx.ModelProto, contract: Contract) -> dict[str, OutputKind]:
    """Output name -> kind, for the outputs whose kind the graph shows: `sampled` for every
    output a random draw reaches, else the float outputs' meaning."""
    walker = _Walker(model)
    sampled = sampled_outputs(model)
    kinds: dict[str, OutputKind] = dict.fromkeys(sampled, "sampled")
    for spec in _float_outputs(contract):
        if spec.name in sampled:
            continue
        origins = walker.origins(model.graph, spec.name)
        kind = _kind_from(spec, origins, _readers(model.graph, spec.name))
        if kind is None and _like_an_input(spec, contract):
            kind = "state"
        if kind is not None:
            kinds[spec.name] = kind
    if any(kind in ("probabilities", "class_scores") for kind in kinds.values()):
        # the linear heads beside the model's class distribution: regressions
        kinds = {name: kind for name, kind in kinds.items() if kind != "linear_head"}
    return kinds


def with_output_kinds(
    contract: Contract, model: onnx.ModelProto, configured: Mapping[str, OutputKind]
) -> Contract:
    """`contract` with every output's kind: the config's, else the graph's, else unknown."""
    unknown = sorted(set(configured) - {o.name for o in contract.outputs})
    if unknown:
        raise ConfigError(
            f"parity.kinds names outputs {unknown} the model does not have; its outputs are "
            f"{[o.name for o in contract.outputs]}"
        )
    inferred = infer_output_kinds(model, contract)
    outputs = [
        o.model_copy(update={"kind": configured.get(o.name) or inferred.get(o.name)})
        for o in contract.outputs
    ]
    return contract.model_copy(update={"outputs": outputs})
