"""Tolerances: the one table that says when an artifact's outputs agree with the reference.

Standard library only (frozen dataclasses that pydantic validates where configs and manifests
embed them), so the GPU verification script judges with the same numbers as the build.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DEFAULT_TOLERANCES", "PRECISIONS", "ParityPolicy", "Precision", "Tolerance"]

Precision = Literal["fp32", "fp16", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """Pass when max_abs <= atol + rtol * max|ref|, cosine >= min_cosine and, for class-score
    outputs, top-1 agreement >= min_top1. int8 gates on cosine and top-1 only (atol None):
    quantization error is not bounded elementwise."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    atol: float | None
    min_cosine: float
    min_top1: float
    rtol: float = 0.0

    def __post_init__(self) -> None:
        if self.atol is not None and self.atol < 0:
            raise ValueError(f"atol must be >= 0 or null, got {self.atol}")
        if self.rtol < 0:
            raise ValueError(f"rtol must be >= 0, got {self.rtol}")
        if not -1 <= self.min_cosine <= 1:
            raise ValueError(f"min_cosine must be in [-1, 1], got {self.min_cosine}")
        if not 0 <= self.min_top1 <= 1:
            raise ValueError(f"min_top1 must be in [0, 1], got {self.min_top1}")


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.99999, min_top1=0.99),
    "fp16": Tolerance(atol=1e-2, rtol=2e-2, min_cosine=0.999, min_top1=0.95),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.995, min_top1=0.95),
    "int8": Tolerance(atol=None, rtol=0.0, min_cosine=0.98, min_top1=0.9),
}


@dataclass(frozen=True)
class ParityPolicy:
    """Tolerances per precision (defaults filled in) and per-output overrides."""

    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    outputs: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)

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
        return cls(
            tolerances={k: Tolerance(**v) for k, v in doc.get("tolerances", {}).items()},
            outputs={
                o: {p: Tolerance(**t) for p, t in per.items()}
                for o, per in doc.get("outputs", {}).items()
            },
        )
