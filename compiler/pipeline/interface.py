"""Read the interface contract off a normalized ONNX graph.

Every dynamic dim the source leaves without a name of its own (unnamed, `?`, or the literal
-1 some exporters store) gets a distinct, stable name `<tensor>_d<axis>`, so two `?` dims are
two dims and each can be ranged; that naming is recorded. A scalar input stays a scalar.

An output whose declared shape the reference does not return (another rank, a fixed dim of
another size: compiler/pipeline/probe.py `returned_shapes`) gets the returned rank, its
disagreeing dims named the same way, in the model and the contract (`as_returned`).

Ranges: the config's (`dims:`), else the batch default for a dim that is axis 0 of an input of
rank >= 2 (1..64, opt 1) or a recurrent op's batch axis; the time axis of a time-major
recurrent op ([time, batch, features]) is no batch. Other input dims are left for probing
(compiler/pipeline/probe.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import onnx

from compiler.core.contract import Contract, DimOrigin, DimRange, TensorSpec, set_flag
from compiler.core.errors import ConfigError, ContractError
from compiler.core.graphs import shapes
from compiler.core.names import free_name

__all__ = [
    "BATCH_RANGE",
    "as_returned",
    "extract_contract",
    "is_batch_dim",
    "name_unnamed_dims",
    "onnx_dtype_name",
    "recurrent_axes",
]

BATCH_RANGE = DimRange(min=1, opt=1, max=64)

_ONNX_TO_NP = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.BOOL: "bool",
}

_UNNAMED_PARAMS = {"", "?"}


def onnx_dtype_name(elem_type: int, where: str) -> str:
    try:
        return _ONNX_TO_NP[elem_type]  # type: ignore[index]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(elem_type)
        hint = (
            ": export the model from its first numeric tensor on (token ids, not text), and "
            "do the rest before it"
            if elem_type == onnx.TensorProto.STRING
            else ""
        )
        raise ContractError(
            f"{where}: element type {name} is not supported in a contract{hint}"
        ) from None


def _graph_values(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.ValueInfoProto]]:
    """("input"|"output", value) for the graph's real inputs (not initializers) and outputs."""
    initializers = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name not in initializers:
            yield "input", vi
    for vi in model.graph.output:
        yield "output", vi


def _dims(vi: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return []
    return list(tt.shape.dim)


def _is_unnamed(d: onnx.TensorShapeProto.Dimension) -> bool:
    if d.HasField("dim_value"):
        return d.dim_value < 0  # -1: "dynamic", as some exporters write it
    return d.dim_param in _UNNAMED_PARAMS


def _describe(d: onnx.TensorShapeProto.Dimension) -> str:
    if d.HasField("dim_value"):
        return f"was {d.dim_value}"
    return f"was '{d.dim_param}'" if d.dim_param else "had no name"


def _new_names(model: onnx.ModelProto) -> dict[tuple[str, int], tuple[str, str]]:
    """(tensor, axis) -> (given name, where it is and what it was) for every unnamed dim.
    Names are `<tensor>_d<axis>`, with a suffix where that collides with an existing name."""
    taken = {d.dim_param for _, vi in _graph_values(model) for d in _dims(vi)} - _UNNAMED_PARAMS
    given: dict[tuple[str, int], tuple[str, str]] = {}
    for kind, vi in _graph_values(model):
        for axis, d in enumerate(_dims(vi)):
            if not _is_unnamed(d):
                continue
            name = free_name(f"{vi.name}_d{axis}", taken)
            given[(vi.name, axis)] = (name, f"{kind} '{vi.name}' axis {axis} ({_describe(d)})")
    return given


def name_unnamed_dims(model: onnx.ModelProto) -> dict[str, str]:
    """Give every unnamed, `?` or -1 graph input/output dim a distinct dim_param, in place;
    returns given name -> where it is."""
    given = _new_names(model)
    for _, vi in _graph_values(model):
        for axis, d in enumerate(_dims(vi)):
            if (vi.name, axis) in given:
                d.Clear()
                d.dim_param = given[(vi.name, axis)][0]
    return {name: where for name, where in given.values()}


def as_returned(
    model: onnx.ModelProto, contract: Contract, returned: Mapping[str, tuple[int, ...]]
) -> tuple[Contract, list[str]]:
    """`contract` with each output in `returned` declared as the reference returns it, in
    place in `model` too: the declared dims that hold (a name, or the returned size) stay,
    the others (all of them where the rank differs) get `<tensor>_d<axis>` names; and what
    changed, one line per output, for the record."""
    taken = set(contract.symbolic_dims())
    named, notes, outputs = dict(contract.named_dims), [], []
    for spec in contract.outputs:
        got = returned.get(spec.name)
        if got is None:
            outputs.append(spec)
            continue
        same_rank = len(got) == len(spec.shape)
        shape: list[int | str] = []
        for axis, size in enumerate(got):
            declared = spec.shape[axis] if same_rank else None
            if declared is not None and (isinstance(declared, str) or declared == size):
                shape.append(declared)
                continue
            name = free_name(f"{spec.name}_d{axis}", taken)
            named[name] = f"output '{spec.name}' axis {axis} (returned {size})"
            shape.append(name)
        notes.append(
            f"{spec.name}: declared {list(spec.shape)}, returns {list(got)} at the dims' opt "
            f"sizes; now {shape}"
        )
        outputs.append(spec.model_copy(update={"shape": shape}))
        vi = next(o for o in model.graph.output if o.name == spec.name)
        vi.type.tensor_type.ClearField("shape")
        dims = vi.type.tensor_type.shape.dim
        for d in shape:
            dim = dims.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d
    return contract.model_copy(update={"outputs": outputs, "named_dims": named}), notes


def _tensor_spec(
    vi: onnx.ValueInfoProto, kind: str, given: Mapping[tuple[str, int], tuple[str, str]]
) -> TensorSpec:
    where = f"graph {kind} '{vi.name}'"
    if not vi.type.HasField("tensor_type"):
        raise ContractError(f"{where}: only tensor {kind}s are supported (sequence/map found)")
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        raise ContractError(
            f"{where}: no shape (rank unknown); re-export the model with static rank"
        )
    shape: list[int | str] = []
    for axis, d in enumerate(tt.shape.dim):
        if (vi.name, axis) in given:
            shape.append(given[(vi.name, axis)][0])
        elif d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        else:
            shape.append(d.dim_param)
    return TensorSpec(name=vi.name, dtype=onnx_dtype_name(tt.elem_type, where), shape=shape)


def is_batch_dim(contract: Contract, dim: str, roles: Mapping[str, str] | None = None) -> bool:
    """A dim at axis 0 of some input of rank >= 2 is taken as a batch dim (wherever else it
    appears: an LSTM state carries the batch at axis 1), unless `roles` (recurrent_axes) says
    it is a recurrent op's time axis; a dim it names that op's batch axis is one."""
    role = (roles or {}).get(dim)
    if role is not None:
        return role == "batch"
    return any(len(t.shape) >= 2 and t.shape[0] == dim for t in contract.inputs)


_RECURRENT = ("LSTM", "GRU", "RNN")


def recurrent_axes(model: onnx.ModelProto, dims: set[str]) -> dict[str, str]:
    """Symbolic input dims the main graph's LSTM, GRU and RNN ops read as their input's time
    axis ('time') or batch axis ('batch'), as shape inference carries the dims' names to
    them. A time-major recurrent model (PyTorch's default, `batch_first=False`) takes
    [time, batch, features]: its axis 0 is no batch."""
    nodes = [n for n in model.graph.node if n.op_type in _RECURRENT]
    if not nodes or not dims:
        return {}
    known = shapes(model)
    roles: dict[str, str] = {}
    for node in nodes:
        shape = known.get(node.input[0], [])
        if len(shape) != 3:
            continue
        batch_first = any(a.name == "layout" and a.i == 1 for a in node.attribute)
        time, batch = (shape[1], shape[0]) if batch_first else (shape[0], shape[1])
        if time in dims and time != batch:
            roles.setdefault(time, "time")
        if batch in dims and time != batch:
            roles.setdefault(batch, "batch")
    return roles


def extract_contract(
    model: onnx.ModelProto,
    dims: Mapping[str, DimRange] | None = None,
    named_dims: Mapping[str, str] | None = None,
) -> Contract:
    """Read the contract off a model; `dims` gives ranges to symbolic dims, `named_dims` is
    what `name_unnamed_dims` gave names to (dims still unnamed here are named the same way).
    Input dims neither the config nor the batch default ranges stay unranged."""
    given = _new_names(model)
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for kind, vi in _graph_values(model):
        (inputs if kind == "input" else outputs).append(_tensor_spec(vi, kind, given))
    named = {**dict(named_dims or {}), **{name: where for name, where in given.values()}}
    contract = Contract(inputs=inputs, outputs=outputs, named_dims=named)
    dims = dict(dims or {})
    known = contract.symbolic_dims()
    unknown = sorted(set(dims) - set(known))
    if unknown:
        raise ConfigError(
            f"config gives ranges for dims {unknown} that the model does not have; "
            f"its symbolic dims are {known}"
        )
    ranges: dict[str, DimRange] = {}
    origins: dict[str, DimOrigin] = {}
    roles = recurrent_axes(model, set(known) - set(dims))
    for d in known:
        if d in dims:
            ranges[d], origins[d] = dims[d], DimOrigin(source="config")
        elif is_batch_dim(contract, d, roles):
            where = (
                "the batch axis of a recurrent op's input"
                if roles.get(d) == "batch"
                else "axis 0 of an input"
            )
            ranges[d] = BATCH_RANGE
            origins[d] = DimOrigin(
                source="batch",
                note=f"{where}: the batch default {BATCH_RANGE.min}..{BATCH_RANGE.max}"
                f" (opt {BATCH_RANGE.opt}); change it with {set_flag('dims', d, 'max')}",
            )
    contract.dims = ranges
    contract.dim_origins = origins
    return contract
