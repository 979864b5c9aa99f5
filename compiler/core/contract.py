"""The interface contract: names, dtypes and shapes (with symbolic dims and their ranges).

What a caller of a package may feed and will get back; read off the normalized ONNX graph by
compiler/pipeline/interface.py. Symbolic dims get their allowed range from the config
(`dims: {batch: {min: 1, opt: 1, max: 8}}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.errors import ConfigError, ContractError

__all__ = ["Contract", "DimRange", "OutputKind", "TensorSpec"]


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


# What an output means, which decides how parity judges it: class scores and probabilities by
# top-k agreement, embeddings by cosine, dense maps, boxes, logit sequences and states by
# scale-aware error. None: not known (judged as `other`).
OutputKind = Literal[
    "class_scores",
    "probabilities",
    "logits_sequence",
    "embedding",
    "dense_map",
    "boxes",
    "state",
    "other",
]


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    shape: list[int | str]  # int: fixed; str: symbolic dim name
    kind: OutputKind | None = None  # outputs only: what the values mean

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
