"""A variant: the passes after normalize and a backend compile, and the precision that follows.

Its own module so that the default pipelines (pipeline/pipelines.py, data built from
`VariantConfig`) and the config that expands them (pipeline/config.py) import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.tolerance import Precision
from passes.registry import PASSES, AnyPassConfig
from targets.registry import BackendOptionsUnion

__all__ = ["PRECISION_IS_DERIVED", "VariantConfig", "judged_precision", "lossiest"]

# lossiest last: fp16 and bf16 are one tier; bf16 has the looser tolerance, so it ranks above
_PRECISION_ORDER: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8")
PRECISION_IS_DERIVED = (
    "precision is derived from the variant's passes and backend, not set: remove it; for int8 "
    "add a quantize or nncf pass, for fp16 the fp16 pass (or tensorrt compile.precision: fp16), "
    "for bf16 openvino compile.inference_precision: bf16 (or tensorrt compile.precision: bf16)"
)


def lossiest(precisions: Iterable[str | None]) -> Precision:
    """The lossiest of `precisions` (None: numerics preserved), fp32 when there are none."""
    ranks = [_PRECISION_ORDER.index(cast(Precision, p)) for p in precisions if p is not None]
    return _PRECISION_ORDER[max(ranks, default=0)]


def judged_precision(built: str, own: str, source: str) -> Precision:
    """The precision a verdict on generated data treats an artifact as (fp32: not lossy).
    `built`: the artifact's recorded precision, the lossiest of the variant's and the
    source's; `own`: the variant's own (VariantConfig.precision); `source`: the reference's.
    An artifact that computes as the reference does (an fp32 variant, or one in the source's
    own precision, of a source no less lossy than the artifact) is lossy only against the
    reference: it keeps its verdict on generated data. ov-bf16 of an int8 source reads int8
    but runs the reference's fp32 float ops in bf16: lossy. The build's verify node and
    `compile-pkg verify` both judge by it."""
    as_reference = own in ("fp32", source)
    return "fp32" if as_reference and lossiest([built, source]) == source else lossiest([built])


class VariantConfig(BaseModel):
    """One artifact of a target: graph passes after normalize, then a backend compile."""

    model_config = ConfigDict(extra="forbid")
    passes: list[AnyPassConfig] = Field(default_factory=list)
    compile: BackendOptionsUnion
    enabled: bool = True

    @model_validator(mode="before")
    @classmethod
    def _no_precision(cls, data: Any) -> Any:
        if isinstance(data, dict) and "precision" in data:
            raise ValueError(PRECISION_IS_DERIVED)
        return data

    @property
    def precision(self) -> Precision:
        """The lossiest of the passes' output precisions and the backend's compute precision:
        what the artifact computes in, and so the tolerance it is judged by."""
        made = [PASSES[p.name].precision for p in self.passes]
        return lossiest([*made, self.compile.compute_precision()])
