"""Value domains the graph states for its inputs, so generated sample data is data the model
can run on and takes its usual paths.

Each input is followed through value-preserving ops (Cast, Reshape, Unsqueeze, Expand, ...)
into every graph and subgraph that reads it. What the graph says, strongest first:

- indices: the input selects rows of a table (`Gather`, `GatherElements` and
  `ScatterElements` indices: 0..rows-1 along their axis, where its size is known; the word,
  segment and position ids of ONNX Runtime's fused `EmbedLayerNormalization`), is one-hot
  encoded (`OneHot`: 0..depth-1), or is compared with many constants (`Equal` against
  0..256, one-hot by comparison): an integer interval;
- selector: an `If` condition tests the input for equality with a constant (`sr == 16000`):
  that constant, so every sample takes the same, intended branch;
- lengths: the input gives the sequence lengths of an LSTM, GRU, RNN or ReverseSequence,
  or is compared with an axis' positions (`arange(T) < lengths[:, None]`, the padding mask
  of a speech or text encoder): 1 up to that length (a number, or a symbolic dim of the
  inputs: each feed's size of it);
- flag: an integer input compared with 0 or 1, negated (`Not`, `1 - x`) or cast to bool,
  or a fused `EmbedLayerNormalization`'s attention mask: {0, 1}.

Inputs the graph says nothing about keep their dtype's default (compiler/pipeline/data.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.core.contract import TensorSpec, ValueDomain
from compiler.core.graphs import shapes

__all__ = ["infer_domains"]

# ops whose output carries (some of) the traced values unchanged, by the input index that does
_PASS_THROUGH = {
    "Identity": (0,),
    "Cast": (0,),
    "CastLike": (0,),
    "Unsqueeze": (0,),
    "Squeeze": (0,),
    "Reshape": (0,),
    "Flatten": (0,),
    "Expand": (0,),
    "Transpose": (0,),
    "Slice": (0,),
    "Tile": (0,),
    "Gather": (0,),  # the data operand: selected values keep their domain
    "Concat": tuple(range(64)),
}
# ops that carry a bool condition on to an If
_BOOL_CHAIN = {"Not", "And", "Or", "Xor", "Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape"}
_MAX_DEPTH = 12
_MAX_CONST = 4096  # elements; larger constants are never compared with an input
_INDEX, _SELECTOR, _FLAG = 3, 2, 1


@dataclass(frozen=True)
class _Finding:
    strength: int
    domain: ValueDomain


class _Graph:
    """Consumers and constants of a model and all its subgraphs (names are global in ONNX,
    and subgraphs read outer values by name)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.shapes: dict[str, list[int]] = {}
        self.values: dict[str, np.ndarray] = {}
        self._propagated: dict[str, list[int | str]] | None = None
        self._walk(model.graph)
        for vi in [*model.graph.value_info, *model.graph.input]:
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and vi.name not in self.shapes:
                # 0 for a dim not known as a number: an axis lookup there finds nothing
                self.shapes[vi.name] = [int(d.dim_value) for d in dims]

    def _walk(self, graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            self.shapes[init.name] = list(init.dims)
            if int(np.prod(init.dims)) <= _MAX_CONST:
                self.values[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            self.producer.update((o, node) for o in node.output if o)
            for i, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, i))
            if node.op_type == "Constant" and node.output:
                self._constant(node)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    self._walk(attr.g)
                for sub in attr.graphs:
                    self._walk(sub)

    def _constant(self, node: onnx.NodeProto) -> None:
        for attr in node.attribute:
            if attr.name == "value":
                self.shapes[node.output[0]] = list(attr.t.dims)
                if int(np.prod(attr.t.dims)) <= _MAX_CONST:
                    self.values[node.output[0]] = numpy_helper.to_array(attr.t)
            elif attr.name in ("value_int", "value_float"):
                value = attr.i if attr.name == "value_int" else attr.f
                self.values[node.output[0]] = np.asarray(value)
                self.shapes[node.output[0]] = []
            elif attr.name in ("value_ints", "value_floats"):
                vals = list(attr.ints) if attr.name == "value_ints" else list(attr.floats)
                self.values[node.output[0]] = np.asarray(vals)
                self.shapes[node.output[0]] = [len(vals)]

    def propagated_shape(self, name: str) -> list[int]:
        """`name`'s shape (0 for a dim not known as a number) as shape inference with data
        propagation gives it: a tensor made by ConstantOfShape(Shape(x)) (TorchScript's
        zeros_like) has the shape of x there, and none without. Computed once, when asked."""
        return [d if isinstance(d, int) else 0 for d in self.propagated_dims(name)]

    def propagated_dims(self, name: str) -> list[int | str]:
        """`name`'s dims as the graph input or shape inference states them: a number, the
        name of a symbolic dim, or 0 where neither is known."""
        if self._propagated is None:
            self._propagated = shapes(self.model, data_prop=True)
        return self._propagated.get(name, [])

    def reach(self, start: str) -> Iterator[tuple[onnx.NodeProto, int]]:
        """(node, input index) for every use of `start`'s values, through pass-through ops."""
        seen = {start}
        queue = deque([(start, 0)])
        while queue:
            name, depth = queue.popleft()
            for node, i in self.consumers.get(name, []):
                yield node, i
                if depth < _MAX_DEPTH and i in _PASS_THROUGH.get(node.op_type, ()):
                    for out in node.output[:1]:
                        if out and out not in seen:
                            seen.add(out)
                            queue.append((out, depth + 1))

    def feeds_if(self, name: str) -> bool:
        """Does `name` (a bool) decide an If, directly or through boolean glue?"""
        seen = {name}
        queue = deque([name])
        while queue:
            for node, i in self.consumers.get(queue.popleft(), []):
                if node.op_type == "If" and i == 0:
                    return True
                if node.op_type in _BOOL_CHAIN:
                    for out in node.output[:1]:
                        if out not in seen:
                            seen.add(out)
                            queue.append(out)
        return False


def _scalars(values: np.ndarray) -> list[int | float]:
    flat = np.unique(values.reshape(-1))
    if flat.dtype.kind in "iub":
        return [int(v) for v in flat]
    return [float(v) for v in flat]


def _gather(g: _Graph, node: onnx.NodeProto) -> _Finding | None:
    """Indices of Gather, GatherElements or ScatterElements (input 1) into their data (input
    0) along `axis`, where that axis' size is known."""
    table = node.input[0]
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)

    def known(shape: list[int]) -> bool:
        return bool(shape) and -len(shape) <= axis < len(shape) and shape[axis] > 0

    shape = g.shapes.get(table, [])
    if not known(shape) and node.op_type != "Gather":
        shape = g.propagated_shape(table)
    if not known(shape):
        return None
    rows = shape[axis]
    why = (
        f"indices into {node.op_type} '{node.name or node.output[0]}' table '{table}' of "
        f"{rows} rows"
    )
    return _Finding(_INDEX, ValueDomain(low=0, high=rows - 1, source=why))


def _one_hot(g: _Graph, node: onnx.NodeProto) -> _Finding | None:
    depth = g.values.get(node.input[1]) if len(node.input) > 1 else None
    if depth is None or depth.size != 1 or int(depth.reshape(-1)[0]) <= 0:
        return None
    n = int(depth.reshape(-1)[0])
    why = f"one-hot encoded by OneHot '{node.name or node.output[0]}' of depth {n}"
    return _Finding(_INDEX, ValueDomain(low=0, high=n - 1, source=why))


def _equal(g: _Graph, node: onnx.NodeProto, i: int, integral: bool) -> _Finding | None:
    other = g.values.get(node.input[1 - i])
    if other is None or other.size == 0:
        return None
    consts = _scalars(other)
    label = f"Equal '{node.name or node.output[0]}'"
    if g.feeds_if(node.output[0]):
        first = _scalars(other.reshape(-1)[:1])[0]
        why = f"an If condition tests it for == {first} ({label})"
        return _Finding(_SELECTOR, ValueDomain(values=[first], source=why))
    if not integral:
        return None
    if len(consts) > 2:
        low, high = int(min(consts)), int(max(consts))
        why = f"compared with the constants {low}..{high} ({label})"
        return _Finding(_INDEX, ValueDomain(low=low, high=high, source=why))
    if set(consts) <= {0, 1}:
        why = f"a flag compared with {' and '.join(str(c) for c in consts)} ({label})"
        return _Finding(_FLAG, ValueDomain(values=[0, 1], source=why))
    return _Finding(_FLAG, ValueDomain(values=consts, source=f"compared with {consts} ({label})"))


def _flag(g: _Graph, node: onnx.NodeProto, i: int) -> _Finding | None:
    """An integer input negated (`Not`, `1 - x`) or cast to bool is a 0/1 flag."""
    label = f"{node.op_type} '{node.name or node.output[0]}'"
    if node.op_type == "Not":
        return _Finding(_FLAG, ValueDomain(values=[0, 1], source=f"negated by {label}"))
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), 0)
        if to == onnx.TensorProto.BOOL:
            return _Finding(_FLAG, ValueDomain(values=[0, 1], source=f"cast to bool by {label}"))
    if node.op_type == "Sub" and i == 1:
        one = g.values.get(node.input[0])
        if one is not None and one.size == 1 and float(one.reshape(-1)[0]) == 1.0:
            return _Finding(_FLAG, ValueDomain(values=[0, 1], source=f"a mask: 1 - x in {label}"))
    return None


# ops that read sequence lengths, by their input index: no length may pass the end of the
# sequence they count in (ONNX Runtime refuses the run), and a length of 0 leaves a sequence
# out (its outputs are zeros, which any artifact matches)
_LENGTHS = {"LSTM": 4, "GRU": 4, "RNN": 4, "ReverseSequence": 1}


def _lengths(g: _Graph, node: onnx.NodeProto, dims: set[str]) -> _Finding | None:
    """sequence_lens of a recurrent node, or ReverseSequence's: 1 up to the length of its
    input's time axis, a number or a symbolic dim of the model's inputs (then each feed's
    size of it)."""
    attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
    if node.op_type == "ReverseSequence":
        axis = attrs.get("time_axis", 0)
    else:
        axis = 1 if attrs.get("layout", 0) == 1 else 0
    shape = g.propagated_dims(node.input[0])
    if axis >= len(shape):
        return None
    label = f"sequence lengths of {node.op_type} '{node.name or node.output[0]}'"
    return _up_to(shape[axis], dims, label, "whose input is {} steps long")


def _up_to(length: int | str | None, dims: set[str], label: str, what: str) -> _Finding | None:
    """Lengths 1..`length`: a number, or a symbolic dim of the inputs (each feed's size of
    it); the source says `label`, then `what` with the length in its {}."""
    if isinstance(length, int) and length > 0:
        why = f"{label}, {what.format(length)}"
        return _Finding(_INDEX, ValueDomain(low=1, high=length, source=why))
    if isinstance(length, str) and length in dims:
        why = f"{label}, {what.format(repr(length))}"
        return _Finding(_INDEX, ValueDomain(low=1, high=2**31 - 1, high_dim=length, source=why))
    return None


# ops between a length and what it is compared with that keep its values (and a Range's
# positions, broadcast to the batch)
_CARRIES = frozenset({"Identity", "Cast", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Flatten"})
_COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual"})


def _source(g: _Graph, name: str, through: frozenset[str] = _CARRIES) -> onnx.NodeProto | None:
    """The node that makes `name`, past the ops of `through` (first input)."""
    node = g.producer.get(name)
    for _ in range(_MAX_DEPTH):
        if node is None or node.op_type not in through:
            return node
        node = g.producer.get(node.input[0])
    return None


def _positions(g: _Graph, name: str) -> int | str | None:
    """Where `name` holds the positions 0, 1, ... of an axis (a Range from 0 by 1, past
    Unsqueeze, Expand, Cast ...), that axis' length (`_length`); None otherwise."""
    made = _source(g, name)
    if made is None or made.op_type != "Range" or len(made.input) != 3:
        return None
    start, delta = (g.values.get(made.input[i]) for i in (0, 2))
    if start is None or delta is None or start.size != 1 or delta.size != 1:
        return None
    if float(start.reshape(-1)[0]) != 0 or float(delta.reshape(-1)[0]) != 1:
        return None
    return _length(g, made.input[1])


def _length(g: _Graph, name: str) -> int | str:
    """The length `name` holds: a number, the name of the symbolic dim a Shape read it from
    (Gather(Shape(x), k), or torch.export's Shape(x, start=k, end=k + 1)), or '' where
    neither is known (the lengths' own max, a size computed otherwise)."""
    limit = g.values.get(name)
    if limit is not None and limit.size == 1:
        return int(limit.reshape(-1)[0])
    picked, k = _source(g, name), 0
    if picked is not None and picked.op_type == "Gather" and len(picked.input) == 2:
        index = g.values.get(picked.input[1])
        if index is None or index.size != 1:
            return ""
        picked, k = _source(g, picked.input[0]), int(index.reshape(-1)[0])
    if picked is None or picked.op_type != "Shape" or k < 0:
        return ""
    dims = g.propagated_dims(picked.input[0])
    axis = k + next((a.i for a in picked.attribute if a.name == "start"), 0)
    dim = dims[axis] if 0 <= axis < len(dims) else ""
    return dim if (isinstance(dim, str) and dim) or (isinstance(dim, int) and dim > 0) else ""


def _compared_lengths(g: _Graph, node: onnx.NodeProto, i: int, dims: set[str]) -> _Finding | None:
    """A length compared with an axis' positions (`arange(T) < lengths[:, None]`: the mask
    a padded batch's lengths make): 1 up to that axis' length, a number or a symbolic dim of
    the inputs (then each feed's size of it). An axis of a length no input dim gives (after
    a Conv, shape inference names it 'unk__0'; the lengths' own max) gives 1..9, the
    integers' default less 0: a length of 0 masks every position, and a mean over none is
    NaN."""
    label = f"lengths compared with positions by {node.op_type} '{node.name or node.output[0]}'"
    length = _positions(g, node.input[1 - i])
    if isinstance(length, str) and length not in dims:
        why = f"{label}, of an axis whose length is no input dim's: 1..9, none empty"
        return _Finding(_INDEX, ValueDomain(low=1, high=9, source=why))
    return _up_to(length, dims, label, "of an axis {} long")


# ONNX Runtime's fused ops (com.microsoft: its transformer optimizer writes them, and models
# shipped optimized hold them) that look rows up in a table: (op, input) -> the table's input
_EMBEDDINGS = {
    ("EmbedLayerNormalization", 0): 2,  # input_ids -> word_embedding
    ("EmbedLayerNormalization", 1): 4,  # segment_ids -> segment_embedding
    ("EmbedLayerNormalization", 8): 3,  # position_ids -> position_embedding
}
_MASKS = {("EmbedLayerNormalization", 7)}  # an attention mask: 1 keeps a token, 0 pads it


def _embedding(g: _Graph, node: onnx.NodeProto, table: int) -> _Finding | None:
    """Indices into a fused op's table (`_EMBEDDINGS`): 0..rows-1 where its rows are known."""
    shape = g.shapes.get(node.input[table], []) if len(node.input) > table else []
    if not shape or shape[0] <= 0:
        return None
    why = (
        f"indices into {node.op_type} '{node.name or node.output[0]}' table "
        f"'{node.input[table]}' of {shape[0]} rows"
    )
    return _Finding(_INDEX, ValueDomain(low=0, high=shape[0] - 1, source=why))


def _findings(g: _Graph, spec: TensorSpec, dims: set[str]) -> Iterator[_Finding]:
    integral = np.dtype(spec.dtype).kind in "iu"
    for node, i in g.reach(spec.name):
        found: _Finding | None = None
        if node.op_type in ("Gather", "GatherElements", "ScatterElements") and i == 1:
            found = _gather(g, node)
        elif _LENGTHS.get(node.op_type) == i:
            found = _lengths(g, node, dims)
        elif node.op_type == "OneHot" and i == 0:
            found = _one_hot(g, node)
        elif node.op_type == "Equal":
            found = _equal(g, node, i, integral)
        elif node.op_type in _COMPARISONS and integral and len(node.input) == 2:
            found = _compared_lengths(g, node, i, dims)
        elif (node.op_type, i) in _EMBEDDINGS and node.domain == "com.microsoft":
            found = _embedding(g, node, _EMBEDDINGS[node.op_type, i])
        elif (node.op_type, i) in _MASKS and node.domain == "com.microsoft":
            why = f"the attention mask of {node.op_type} '{node.name or node.output[0]}'"
            found = _Finding(_FLAG, ValueDomain(values=[0, 1], source=why))
        elif integral:
            found = _flag(g, node, i)
        if found is not None:
            yield found


def _merge(findings: Sequence[_Finding]) -> ValueDomain | None:
    """The strongest kind of finding wins; several index findings narrow to their overlap."""
    if not findings:
        return None
    top = max(f.strength for f in findings)
    best = [f.domain for f in findings if f.strength == top]
    if top != _INDEX or len(best) == 1:
        return best[0]
    tightest = min(best, key=lambda d: (d.high or 0) - (d.low or 0))
    low = max(d.low or 0 for d in best)
    high = min(d.high or 0 for d in best)
    if low > high:
        return tightest
    high_dim = next((d.high_dim for d in best if d.high_dim), "")
    return ValueDomain(low=low, high=high, high_dim=high_dim, source=tightest.source)


def infer_domains(model: onnx.ModelProto, inputs: Sequence[TensorSpec]) -> dict[str, ValueDomain]:
    """Input name -> the value domain the graph states for it (inputs it says nothing about
    are left out)."""
    g = _Graph(model)
    dims = {d for spec in inputs for d in spec.shape if isinstance(d, str)}
    out: dict[str, ValueDomain] = {}
    for spec in inputs:
        if spec.dtype == "bool":
            continue
        domain = _merge(list(_findings(g, spec, dims)))
        if domain is not None:
            out[spec.name] = domain
    return out
