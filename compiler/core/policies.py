"""Policies a package is built and judged under, recorded in its manifest so that serving and
`compile-pkg verify` read them typed: package metadata, latency method, selection rules."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.tolerance import ParityPolicy

__all__ = ["LatencyPolicy", "PackageMeta", "PackagePolicy", "SelectionPolicy"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackageMeta(_Strict):
    name: str = ""
    version: str = "0.0.0"
    license: str = ""
    authors: list[str] = Field(default_factory=list)
    training_data: list[str] = Field(default_factory=list)
    description: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class LatencyPolicy(_Strict):
    """How latency is measured: the artifact and the reference each in a worker process of
    their own, timed in alternating blocks (compiler/measure/timing.py) until the speedup's
    interval is narrow or the budget ends."""

    warmup: int = Field(default=5, ge=0, description="untimed runs in each worker after loading")
    runs: int = Field(
        default=30, ge=1, description="at most this many block pairs (artifact, reference)"
    )
    max_seconds: float = Field(
        default=3.0,
        gt=0,
        description="time budget per artifact for the timed blocks (workers' start-up apart)",
    )
    target_halfwidth: float = Field(
        default=0.03, gt=0, description="stop once the speedup is known within +-this fraction"
    )
    confidence: float = Field(default=0.95, gt=0, lt=1, description="of the speedup's interval")
    block_ms: float = Field(default=50.0, gt=0, description="each block times runs for ~this long")
    settle_ms: float = Field(
        default=20.0, ge=0, description="pause before each block: the other worker's threads park"
    )
    threads: int = Field(default=0, ge=0, description="0: the runtime's default")
    stop_when_slower: bool = Field(
        default=True,
        description="stop timing an artifact once its speedup's interval lies wholly below 1 "
        "(slower than the reference, settled: serving puts it after the reference anyway)",
    )
    regression_margin: float = Field(
        default=0.10,
        ge=0,
        lt=1,
        description="`verify` names a latency regression when the new speedup's upper bound "
        "is below the recorded lower bound by more than this fraction",
    )


class SelectionPolicy(_Strict):
    """How serving orders artifacts: an explicit order of artifact ids first (if given), then
    by speedup over the reference measured in one run on a host like the serving one. A lossy
    artifact (fp16, bf16, int8) comes before a more precise one of the same target only when
    its speedup's lower bound is above the precise one's upper bound and at least `1 +
    min_gain` times its estimate.

    The package's reference (the normalized fp32 model on ONNX Runtime, when the package
    ships it) is a candidate too: an artifact is served ahead of it only when its speedup's
    lower bound is at least `1 + min_gain`, so no artifact is picked that was not measurably
    faster than the model it replaces.

    `quantized_min_speedup` (packages written before the interval rule) is read and ignored."""

    order: list[str] = Field(default_factory=list)
    min_gain: float = Field(
        default=0.03,
        ge=0,
        lt=1,
        description="an artifact is served ahead of the reference itself only when its "
        "speedup's lower bound is at least 1 + this, and a lossier one ahead of a more "
        "precise one of its target only when its lower bound is at least 1 + this times the "
        "other's speedup: a gain smaller than what a second measurement moves (silero_vad's "
        "ort-fp32: 1.02x [1.01-1.03] at build, 0.98x [0.97-0.99] an hour later on the same "
        "host) is not worth serving a different model, nor giving up precision for",
    )

    @model_validator(mode="before")
    @classmethod
    def _drop_replaced(cls, data: Any) -> Any:
        if isinstance(data, dict) and "quantized_min_speedup" in data:
            data = {k: v for k, v in data.items() if k != "quantized_min_speedup"}
        return data


class PackagePolicy(_Strict):
    """Everything that decides a verdict, as the build configured it."""

    parity: ParityPolicy = Field(default_factory=ParityPolicy)
    latency: LatencyPolicy = Field(default_factory=LatencyPolicy)
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)
