"""Tolerances: the one table that says when an artifact's outputs agree with the reference, and
the task check a build may add on top.

One Tolerance per precision holds a threshold for every metric; an output's kind picks the
metrics that judge it (compiler/core/parity.py): decided top-1 for class scores, probabilities
and logit sequences, row cosine for embeddings, scale-aware L2 error for dense maps, boxes and
states. fp32 adds an elementwise bound (atol + rtol * peak) on every float output, because an
fp32 artifact computes the same function; lossy precisions (rtol None) are judged only by what
their outputs mean, since one flipped near-tie is not an error.

Standard library only (frozen dataclasses that pydantic validates where configs and manifests
embed them), so the GPU verification script judges with the same numbers as the build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_TOLERANCES",
    "PRECISIONS",
    "ParityPolicy",
    "Precision",
    "TaskSpec",
    "Tolerance",
    "merge_tolerance",
]

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """Thresholds of every parity metric; the output's kind says which of them judge it.

    atol: the absolute floor, in output units: an RMS error this small never fails an output.
      Where the reference is so small that max_rel_l2 of its RMS is below atol, it carries no
      scale of its own ("near zero"): its L2 error is judged against atol and cosine is not
      used. None: no floor.
    rtol: the elementwise bound's relative part: max abs err <= atol + rtol * peak (peak:
      max |reference|, or 1 for probabilities). None: no elementwise bound (lossy precisions).
    max_rel_l2: scale-aware error of dense maps, boxes, states and outputs of unknown kind:
      ||artifact - reference|| / ||reference|| (SNR = -20 log10 of it). None: not judged.
    min_cosine: mean cosine of embedding rows, and cosine of outputs of unknown kind.
    min_top1: decided top-1 agreement of class outputs (and agreement of integer outputs).
    top1_tie: a flip between classes whose reference probabilities lie within this of each
      other is no disagreement: the reference itself cannot separate them.
    """

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    atol: float | None
    min_cosine: float
    min_top1: float
    rtol: float | None = 0.0
    max_rel_l2: float | None = None
    top1_tie: float = 0.01

    def __post_init__(self) -> None:
        for name in ("atol", "rtol", "max_rel_l2"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or null, got {value}")
        if not -1 <= self.min_cosine <= 1:
            raise ValueError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if not 0 <= self.min_top1 <= 1:
            raise ValueError(f"min_top1 must be in [0, 1], got {self.min_top1}")
        if not 0 <= self.top1_tie < 1:
            raise ValueError(f"top1_tie must be in [0, 1), got {self.top1_tie}")

    @property
    def elementwise(self) -> bool:
        """Whether the elementwise bound (atol + rtol * peak) judges."""
        return self.atol is not None and self.rtol is not None


# Measured on ORT and OpenVINO artifacts of five real models with real data (L2 error relative
# to the reference): fp32 <= 6e-6 (decided top-1 1.0); fp16 text recognizer 0.006; bf16
# detection map 0.04 (text mask IoU 0.99 with the reference); int8 recognizers reading every
# line right 0.19-0.21; int8 detection maps whose text masks are 20-50 % off 0.48-0.63. As
# SNR (-20 log10 max_rel_l2): 60 dB fp32, 34 dB fp16, 20 dB bf16, 14 dB int8; the cosine
# bounds match (1 - cos ~ L2^2 / 2). atol 1e-4: the fp32 detection map on generated input
# peaks at 2e-5 and its fp32 artifact differs by 1.8e-7, which must pass.
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, max_rel_l2=1e-3, min_cosine=0.99999, min_top1=0.99),
    "fp16": Tolerance(atol=1e-4, rtol=None, max_rel_l2=2e-2, min_cosine=0.999, min_top1=0.95),
    "bf16": Tolerance(atol=1e-4, rtol=None, max_rel_l2=0.1, min_cosine=0.995, min_top1=0.95),
    "int8": Tolerance(atol=1e-4, rtol=None, max_rel_l2=0.2, min_cosine=0.98, min_top1=0.9),
}


def merge_tolerance(base: Tolerance, changes: Mapping[str, Any]) -> Tolerance:
    """`base` with some fields replaced: a partial tolerance in a config file or `--set`."""
    known = {f.name for f in dataclasses.fields(Tolerance)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"unknown tolerance fields {unknown}; known: {sorted(known)}")
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class TaskSpec:
    """A task metric (`module:function(outputs, labels) -> score`, or `file.py:function`) and
    how far an artifact's score may fall below the reference's on the labelled samples.
    Like Olive's and NNCF's validation functions; the accuracy-aware int8 loops judge by it."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    metric: str
    max_drop: float = 0.0
    higher_is_better: bool = True

    def __post_init__(self) -> None:
        module, sep, function = self.metric.rpartition(":")
        if not sep or not module or not function:
            raise ValueError(
                f"metric {self.metric!r}: expected module:function or path/to/file.py:function"
            )
        if self.max_drop < 0:
            raise ValueError(f"max_drop must be >= 0, got {self.max_drop}")

    def drop(self, reference: float, artifact: float) -> float:
        """How much worse the artifact scores than the reference (negative: better)."""
        return reference - artifact if self.higher_is_better else artifact - reference


@dataclass(frozen=True)
class ParityPolicy:
    """Tolerances per precision (defaults filled in), per-output overrides, and the task."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    outputs: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)
    task: TaskSpec | None = None

    def __post_init__(self) -> None:
        unknown = sorted(
            {*self.tolerances, *(p for o in self.outputs.values() for p in o)} - set(PRECISIONS)
        )
        if unknown:
            raise ValueError(f"unknown precisions {unknown}; known: {list(PRECISIONS)}")
        object.__setattr__(self, "tolerances", {**DEFAULT_TOLERANCES, **self.tolerances})

    def tolerance(self, precision: str, output: str) -> Tolerance:
        per_output = self.outputs.get(output, {})
        return per_output.get(precision) or self.tolerances[precision]

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ParityPolicy:
        """From the JSON a manifest stores (bare hosts have no pydantic to validate it)."""
        task = doc.get("task")
        return cls(
            tolerances={k: Tolerance(**v) for k, v in doc.get("tolerances", {}).items()},
            outputs={
                o: {p: Tolerance(**t) for p, t in per.items()}
                for o, per in doc.get("outputs", {}).items()
            },
            task=TaskSpec(**task) if task else None,
        )
