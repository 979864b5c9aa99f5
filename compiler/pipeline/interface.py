"""Read the interface contract off a normalized ONNX graph.

Unnamed dynamic dims are given a stable name `<input>_d<axis>` so they can be ranged, and that
naming is recorded. A symbolic dim that appears only as axis 0 of inputs is taken as a batch
dim and gets the default range 1..64 unless the config gives one.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from compiler.core.contract import Contract, DimRange, TensorSpec
from compiler.core.errors import ConfigError, ContractError

__all__ = ["extract_contract", "name_unnamed_dims", "onnx_dtype_name"]


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


def onnx_dtype_name(elem_type: int, where: str) -> str:
    try:
        return _ONNX_TO_NP[elem_type]  # type: ignore[index]
    except KeyError:
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise ContractError(
            f"{where}: element type {name} is not supported in a contract"
        ) from None


def _tensor_spec(vi: onnx.ValueInfoProto, kind: str, named: dict[str, str]) -> TensorSpec:
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
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif d.dim_param:
            shape.append(d.dim_param)
        else:
            name = f"{vi.name}_d{axis}"
            named[name] = f"{kind} '{vi.name}' axis {axis}"
            shape.append(name)
    return TensorSpec(name=vi.name, dtype=onnx_dtype_name(tt.elem_type, where), shape=shape)


def name_unnamed_dims(model: onnx.ModelProto) -> dict[str, str]:
    """Give every unnamed dynamic graph input/output dim a dim_param, in place."""
    named: dict[str, str] = {}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
                continue
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if not d.HasField("dim_value") and not d.dim_param:
                    d.dim_param = f"{vi.name}_d{axis}"
                    named[d.dim_param] = f"{kind} '{vi.name}' axis {axis}"
    return named


def extract_contract(
    model: onnx.ModelProto, dims: Mapping[str, DimRange] | None = None
) -> Contract:
    """Read the contract off a normalized model; `dims` gives ranges to symbolic dims."""
    initializers = {i.name for i in model.graph.initializer}
    named: dict[str, str] = {}
    inputs = [
        _tensor_spec(vi, "input", named) for vi in model.graph.input if vi.name not in initializers
    ]
    outputs = [_tensor_spec(vi, "output", named) for vi in model.graph.output]
    contract = Contract(inputs=inputs, outputs=outputs, named_dims=named)
    dims = dict(dims or {})
    unknown = sorted(set(dims) - set(contract.symbolic_dims()))
    if unknown:
        raise ConfigError(
            f"config gives ranges for dims {unknown} that the model does not have; "
            f"its symbolic dims are {contract.symbolic_dims()}"
        )
    ranges = {}
    for d in contract.symbolic_dims():
        if d in dims:
            ranges[d] = dims[d]
        elif _is_batch_dim(contract, d):
            ranges[d] = DimRange(min=1, opt=1, max=64)
    contract.dims = ranges
    return contract


def _is_batch_dim(contract: Contract, dim: str) -> bool:
    """A symbolic dim that appears only as axis 0 of inputs is taken as a batch dim."""
    axes = {axis for t in contract.inputs for axis, d in enumerate(t.shape) if d == dim}
    return axes == {0}
