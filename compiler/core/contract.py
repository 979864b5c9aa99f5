"""The interface contract: names, dtypes and shapes (with symbolic dims and their ranges).

What a caller of a package may feed and will get back; read off the normalized ONNX graph by
compiler/pipeline/interface.py. Symbolic dims get their allowed range from the config
(`dims: {batch: {min: 1, opt: 1, max: 8}}`, or `opt` alone), from the batch default, or from
probing the graph (compiler/pipeline/probe.py); `dim_origins` says which. An input may carry
the value domain the graph states for it (indices into a table, a flag, an `If` selector).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.errors import ConfigError, ContractError

__all__ = [
    "Contract",
    "DimOrigin",
    "DimRange",
    "OutputKind",
    "TensorSpec",
    "ValueDomain",
    "set_flag",
]


class DimRange(BaseModel):
    """Allowed values of one symbolic dim; `opt` is what samples and benchmarks use.

    Given `opt` alone, min and max default around it: min = opt // 2 (at least 1), max =
    2 * opt; so `--set dims.NAME.opt=N` is a complete range. `step`: the sizes between min
    and max the model takes are opt plus or minus a multiple of it (a detector's feature
    pyramid: multiples of 32; frames stacked by 4).
    """

    model_config = ConfigDict(extra="forbid")
    min: int = Field(ge=0)
    opt: int = Field(ge=0)
    max: int = Field(ge=0)
    step: int = Field(default=1, ge=1, description="sizes taken: opt +- a multiple of it")

    def takes(self, size: int) -> bool:
        """Whether `size` is in the range and on its step."""
        return self.min <= size <= self.max and (size - self.opt) % self.step == 0

    def step_only(self) -> DimRange:
        """This range's step with no bounds of its own (every positive size on it, to 2**31):
        what serving enforces of a range the config did not set."""
        low = self.opt - self.step * ((self.opt - 1) // self.step) if self.opt else self.step
        high = self.opt + self.step * ((2**31 - 1 - self.opt) // self.step)
        return DimRange(min=min(low, self.opt), opt=self.opt, max=high, step=self.step)

    def describe(self) -> str:
        """`1..64 (opt 1)`, or `32..3840 (opt 480, step 32)`, for messages and reports."""
        step = f", step {self.step}" if self.step > 1 else ""
        return f"{self.min}..{self.max} (opt {self.opt}{step})"

    @model_validator(mode="before")
    @classmethod
    def _around_opt(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        opt = data.get("opt")
        if not isinstance(opt, int) or isinstance(opt, bool):
            return data
        filled = dict(data)
        if filled.get("min") is None:
            filled["min"] = min(opt, max(1, opt // 2))
        if filled.get("max") is None:
            filled["max"] = 2 * opt
        return filled

    @model_validator(mode="after")
    def _ordered(self) -> DimRange:
        if not self.min <= self.opt <= self.max:
            raise ValueError(
                f"need min <= opt <= max, got min {self.min}, opt {self.opt}, max {self.max}"
            )
        if (self.min - self.opt) % self.step or (self.max - self.opt) % self.step:
            raise ValueError(
                f"min {self.min} and max {self.max} must be opt {self.opt} plus or minus a "
                f"multiple of step {self.step}"
            )
        return self


class DimOrigin(BaseModel):
    """How a symbolic dim got its range: the config, the batch default (a dim at axis 0 of an
    input: 1..64, opt 1), or probing the sizes the reference model accepts. `note` says what
    was tried, for the report; no module reads it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: Literal["config", "batch", "probed"]
    probes: int = Field(default=0, description="reference runs it took")
    note: str = ""


class ValueDomain(BaseModel):
    """The values an input takes: a set (`values`) or an interval (`low`..`high`; integers
    include `high`, floats draw from [low, high)). Generated sample data draws from it.
    `source` says where it comes from (the config, the graph, or the dtype's default).
    `high_dim`: the interval ends at the size a feed gives this symbolic dim where that is
    lower than `high` (an LSTM's sequence_lens: no sequence runs past its input's end)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    values: list[int | float] | None = None
    low: int | float | None = None
    high: int | float | None = None
    high_dim: str = ""
    source: str = ""

    @model_validator(mode="after")
    def _one_form(self) -> ValueDomain:
        if self.values is not None:
            if not self.values:
                raise ValueError("values: give at least one value")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give values, or low and high")
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        return self

    def describe(self) -> str:
        """`{0, 1}` or `0..9`, for messages and reports."""
        if self.values is not None:
            shown = ", ".join(str(v) for v in self.values[:8])
            return "{" + shown + (", ..." if len(self.values) > 8 else "") + "}"
        return f"{self.low}..{self.high_dim or self.high}"

    def high_at(self, sizes: Mapping[str, int]) -> int | float | None:
        """`high` for a feed whose symbolic dims have these sizes."""
        if self.high_dim in sizes and self.high is not None:
            return min(self.high, sizes[self.high_dim])
        return self.high


# What an output means, which decides how parity judges it: class scores, probabilities and
# logit sequences by decided top-1 agreement, embeddings by cosine, dense maps, boxes and
# states by scale-aware error; a linear head (a MatMul/Gemm's output that nothing in the graph
# reads as classes: class logits or a regression) by top-1 and by its values both; a sampled
# output (one a random draw in the graph reaches) by its distribution. None: not known (judged
# as `other`).
OutputKind = Literal[
    "class_scores",
    "probabilities",
    "logits_sequence",
    "linear_head",
    "embedding",
    "dense_map",
    "boxes",
    "state",
    "sampled",
    "other",
]


def _key_part(part: str) -> str:
    """One part of a `--set` key: quoted when it holds a dot, quote, '=' or blank."""
    if part and not any(c in part for c in '."=\\') and not any(c.isspace() for c in part):
        return part
    return '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'


def set_flag(*parts: str, value: str = "N") -> str:
    """The `--set` option for a config key, quoted for a POSIX shell: `--set dims.seq.opt=N`,
    `--set 'dims."p2o.DynamicDimension.1".opt=N'` (the grammar: compiler/pipeline/config.py)."""
    return "--set " + shlex.quote(".".join(_key_part(p) for p in parts) + "=" + value)


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str  # numpy dtype name: float32, int64, ...
    shape: list[int | str]  # int: fixed; str: symbolic dim name; [] for a scalar
    kind: OutputKind | None = None  # outputs only: what the values mean
    domain: ValueDomain | None = None  # inputs only: the values the graph says it takes

    def concrete_shape(self, dims: Mapping[str, DimRange], which: str = "opt") -> tuple[int, ...]:
        out = []
        for d in self.shape:
            if isinstance(d, int):
                out.append(d)
            elif d in dims:
                out.append(getattr(dims[d], which))
            else:
                raise ConfigError(
                    f"tensor '{self.name}': symbolic dim '{d}' has no range; give it one in the "
                    f"config (dims: {{{d!r}: {{opt: N}}}}) or with {set_flag('dims', d, 'opt')}"
                )
        return tuple(out)


class Contract(BaseModel):
    """What a caller of the package may feed and will get back."""

    model_config = ConfigDict(extra="forbid")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, DimRange] = Field(default_factory=dict)
    named_dims: dict[str, str] = Field(
        default_factory=dict,
        description="dims that had no name in the source (unnamed, '?' or -1), by given name",
    )
    dim_origins: dict[str, DimOrigin] = Field(
        default_factory=dict, description="how each ranged dim got its range"
    )
    equal_dims: list[list[str]] = Field(
        default_factory=list,
        description="groups of dims a feed must give one size: dims named apart that the "
        "reference takes only together (a tf2onnx export names each input's batch and length "
        "apart; an LSTM state's batch follows the input's)",
    )

    def symbolic_dims(self) -> list[str]:
        seen: dict[str, None] = {}
        for t in [*self.inputs, *self.outputs]:
            for d in t.shape:
                if isinstance(d, str):
                    seen.setdefault(d)
        return list(seen)

    def input_dims(self) -> list[str]:
        """The symbolic dims of the inputs, in order of first appearance."""
        seen: dict[str, None] = {}
        for t in self.inputs:
            for d in t.shape:
                if isinstance(d, str):
                    seen.setdefault(d)
        return list(seen)

    def data_sized_outputs(self) -> set[str]:
        """Outputs with a symbolic dim no input has: their size depends on the data (the
        detections a non-maximum suppression keeps), so a lossy artifact may differ in it."""
        given = set(self.input_dims())
        return {
            t.name
            for t in self.outputs
            if any(isinstance(d, str) and d not in given for d in t.shape)
        }

    def unranged_dims(self) -> list[str]:
        """Input dims with no range yet: samples cannot be made until each has one."""
        return [d for d in self.input_dims() if d not in self.dims]

    def dim_axes(self, dim: str) -> list[str]:
        """Where a dim appears among the inputs, e.g. ["input 'x' axis 2"], for messages."""
        return [
            f"input '{t.name}' axis {axis}"
            for t in self.inputs
            for axis, d in enumerate(t.shape)
            if d == dim
        ]

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
                    if (got - r.opt) % r.step:
                        below = got - (got - r.opt) % r.step
                        near = [v for v in (below, below + r.step) if r.min <= v <= r.max]
                        raise ContractError(
                            f"input '{spec.name}' axis {axis} ('{want}'): size {got} is not one "
                            f"the model takes: it takes {r.opt} plus or minus multiples of "
                            f"{r.step} (nearest: {' or '.join(map(str, near))}); pad or resize "
                            "the input to one of them"
                        )
                    if not r.min <= got <= r.max:
                        raise ContractError(
                            f"input '{spec.name}' axis {axis} ('{want}'): size {got} outside "
                            f"the allowed range [{r.min}, {r.max}] (a build with "
                            f"{set_flag('dims', want, 'max' if got > r.max else 'min', value=str(got))}"
                            f" allows it)"
                        )
                if bound.setdefault(want, got) != got:
                    raise ContractError(
                        f"input '{spec.name}' axis {axis}: dim '{want}' is {got} here but "
                        f"{bound[want]} in another input"
                    )
            out[spec.name] = arr
        for group in self.equal_dims:
            sizes = {d: bound[d] for d in group if d in bound}
            if len(set(sizes.values())) > 1:
                shown = ", ".join(
                    f"'{d}' {v} ({'; '.join(self.dim_axes(d))})" for d, v in sizes.items()
                )
                raise ContractError(
                    f"dims {shown} differ: the model takes them only at one size (named apart "
                    "in the model, they must be equal); feed them at one size"
                )
        return out
