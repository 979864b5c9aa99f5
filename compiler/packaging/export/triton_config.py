"""A Triton `config.pbtxt` from the interface contract: tensor names, dtypes and dims,
`max_batch_size` and dynamic batching from the batch dim's range, the instance kind.

The batch dim is the symbolic dim at axis 0 of every input and output whose range starts at 1
(Triton sends batches of 1..max_batch_size); without one the model declares
`max_batch_size: 0` and full shapes, symbolic dims as -1 (or their value where the range pins
them). Rendered as protobuf text format; the tests parse it with the `model_config` protobuf
that `tritonclient` ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from compiler.core.contract import Contract, DimRange, TensorSpec
from compiler.core.errors import PackageError

__all__ = ["TRITON_DTYPES", "TritonModel", "TritonTensor", "batch_dim", "model_from_contract"]

TRITON_DTYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "uint16": "TYPE_UINT16",
    "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
    "str": "TYPE_STRING",
    "object": "TYPE_STRING",
}

Kind = Literal["KIND_CPU", "KIND_GPU"]


@dataclass(frozen=True)
class TritonTensor:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # without the batch dim when the model batches; -1: any size
    scalar: bool = False  # a rank-0 tensor: declared as [1] and reshaped to []


@dataclass(frozen=True)
class TritonModel:
    """One model's configuration, in the fields config.pbtxt names."""

    name: str
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    kind: Kind
    max_batch_size: int = 0
    dynamic_batching: bool = False
    platform: str = ""  # onnxruntime_onnx, tensorrt_plan
    backend: str = ""  # openvino, python
    default_model_filename: str = ""
    parameters: Mapping[str, str] = field(default_factory=dict)

    def pbtxt(self) -> str:
        lines = [f"name: {_quote(self.name)}"]
        if self.platform:
            lines.append(f"platform: {_quote(self.platform)}")
        if self.backend:
            lines.append(f"backend: {_quote(self.backend)}")
        lines.append(f"max_batch_size: {self.max_batch_size}")
        if self.default_model_filename:
            lines.append(f"default_model_filename: {_quote(self.default_model_filename)}")
        lines += _tensors("input", self.inputs) + _tensors("output", self.outputs)
        lines.append(f"instance_group [\n  {{\n    count: 1\n    kind: {self.kind}\n  }}\n]")
        if self.dynamic_batching:
            lines.append("dynamic_batching { }")
        lines.append("version_policy: { latest: { num_versions: 1 } }")
        for key, value in sorted(self.parameters.items()):
            lines.append(
                f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}"
            )
        return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string literal (octal escapes for anything not printable)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensors(field_name: str, tensors: tuple[TritonTensor, ...]) -> list[str]:
    blocks = []
    for t in tensors:
        dims = ", ".join(str(d) for d in t.dims)
        body = [
            f"    name: {_quote(t.name)}",
            f"    data_type: {t.data_type}",
            f"    dims: [ {dims} ]",
        ]
        if t.scalar:
            body.append("    reshape: { shape: [ ] }")
        blocks.append("  {\n" + "\n".join(body) + "\n  }")
    return [f"{field_name} [\n" + ",\n".join(blocks) + "\n]"]


def batch_dim(contract: Contract) -> tuple[str, DimRange] | None:
    """The dim Triton may batch along: symbolic, at axis 0 of every tensor, range from 1."""
    tensors = [*contract.inputs, *contract.outputs]
    heads = {t.shape[0] if t.shape else None for t in tensors}
    if len(heads) != 1:
        return None
    head = heads.pop()
    if not isinstance(head, str) or head not in contract.dims:
        return None
    rng = contract.dims[head]
    return (head, rng) if rng.min <= 1 <= rng.max else None


def _dims(t: TensorSpec, dims: Mapping[str, DimRange], batched: bool) -> tuple[int, ...]:
    out = []
    for d in t.shape[1:] if batched else t.shape:
        if isinstance(d, int):
            out.append(d)
        else:
            rng = dims.get(d)
            out.append(rng.min if rng is not None and rng.min == rng.max else -1)
    return tuple(out)


def _tensor(t: TensorSpec, contract: Contract, batched: bool, where: str) -> TritonTensor:
    dtype = TRITON_DTYPES.get(t.dtype)
    if dtype is None:
        raise PackageError(
            f"{where}: tensor {t.name!r} has dtype {t.dtype}, which Triton has no type for; "
            "export another format"
        )
    dims = _dims(t, contract.dims, batched)
    scalar = not dims and not batched
    return TritonTensor(t.name, dtype, (1,) if scalar else dims, scalar)


def model_from_contract(
    name: str,
    contract: Contract,
    kind: Kind,
    *,
    platform: str = "",
    backend: str = "",
    default_model_filename: str = "",
    parameters: Mapping[str, str] | None = None,
) -> TritonModel:
    """The Triton model for an artifact whose interface is `contract`."""
    batch = batch_dim(contract)
    batched = batch is not None
    return TritonModel(
        name=name,
        inputs=tuple(_tensor(t, contract, batched, name) for t in contract.inputs),
        outputs=tuple(_tensor(t, contract, batched, name) for t in contract.outputs),
        kind=kind,
        max_batch_size=batch[1].max if batch else 0,
        dynamic_batching=batch is not None and batch[1].max > 1,
        platform=platform,
        backend=backend,
        default_model_filename=default_model_filename,
        parameters=dict(parameters or {}),
    )
