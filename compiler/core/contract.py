"""The interface contract: names, dtypes and shapes (with symbolic dims and their ranges).

Extracted from the normalized ONNX graph. Symbolic dims get their allowed range from the
config (`dims: {batch: {min: 1, opt: 1, max: 8}}`); unnamed dynamic dims are given a
stable name `<input>_d<axis>` so they can be ranged, and that naming is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.errors import ConfigError, ContractError

__all__ = ["Contract", "DimRange", "TensorSpec", "extract_contract", "onnx_dtype_name"]


class DimRange(BaseModel):
    """Allowed values of one symbolic dim; `opt` is what samples and benchmarks use."""

    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=0)
    opt: int = Field(ge=0)
    max: int = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> DimRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(f"need min <= opt <= max, got {self.min}, {self.opt}, {self.max}")
        return self


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    shape: list[int | str]  # int: fixed; str: symbolic dim name

    def concrete_shape(self, dims: Mapping[str, DimRange], which: str = "opt") -> tuple[int, ...]:
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
            elif d in dims:
                out.append(getattr(dims[d], which))
            else:
                raise ConfigError(
                    f"tensor '{self.name}': symbolic dim '{d}' has no range; "
                    f"give it one in the config (dims: {{{d}: {{min: .., opt: .., max: ..}}}}) "
                    f"or with --set dims.{d}.opt=N"
                )
        return tuple(out)


class Contract(BaseModel):
    """What a caller of the package may feed and will get back."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, DimRange] = Field(default_factory=dict)
    named_dims: dict[str, str] = Field(
        default_factory=dict, description="dims that had no name in the source, by given name"
    )

    def symbolic_dims(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in [*self.inputs, *self.outputs]:
            for d in t.shape:
                if isinstance(d, str):
                    seen.setdefault(d)
        return list(seen)

    def input_shapes(self, which: str = "opt") -> dict[str, tuple[int, ...]]:
        return {t.name: t.concrete_shape(self.dims, which) for t in self.inputs}

    def validate_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names, dtypes, ranks, fixed dims, dim ranges and dim consistency."""
        expected = {t.name for t in self.inputs}
        missing = sorted(expected - set(feeds))
        extra = sorted(set(feeds) - expected)
        if missing or extra:
            raise ContractError(
                f"inputs do not match the contract: missing {missing}, unexpected {extra}; "
                f"expected {sorted(expected)}"
            )
        bound: dict[str, int] = {}
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            arr = np.asarray(feeds[spec.name])
            if arr.dtype != np.dtype(spec.dtype):
                raise ContractError(
                    f"input '{spec.name}': dtype {arr.dtype}, contract says {spec.dtype}; "
                    f"convert with .astype(np.{spec.dtype})"
                )
            if arr.ndim != len(spec.shape):
                raise ContractError(
                    f"input '{spec.name}': rank {arr.ndim} {list(arr.shape)}, "
                    f"contract says rank {len(spec.shape)} {spec.shape}"
                )
            for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
                if isinstance(want, int):
                    if got != want:
                        raise ContractError(
                            f"input '{spec.name}' axis {axis}: size {got}, contract fixes it at {want}"
                        )
                    continue
                if want in self.dims:
                    r = self.dims[want]
                    if not r.min <= got <= r.max:
                        raise ContractError(
                            f"input '{spec.name}' axis {axis} ('{want}'): size {got} outside "
                            f"the allowed range [{r.min}, {r.max}]"
                        )
                if bound.setdefault(want, got) != got:
                    raise ContractError(
                        f"input '{spec.name}' axis {axis}: dim '{want}' is {got} here but "
                        f"{bound[want]} in another input"
                    )
            out[spec.name] = arr
        return out


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
