"""Policies a package is built and judged under, recorded in its manifest so that serving and
`compile-pkg verify` read them typed: package metadata, latency method, selection rules."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
    warmup: int = Field(default=5, ge=0)
    runs: int = Field(default=30, ge=1)
    max_seconds: float = Field(default=20.0, gt=0, description="per artifact; stops early")
    threads: int = Field(default=0, ge=0, description="0: the runtime's default")


class SelectionPolicy(_Strict):
    """How serving orders artifacts: an explicit order of artifact ids first (if given),
    then by measured latency on a matching host. A quantized artifact must beat the best
    float artifact of its target by `quantized_min_speedup` or it is ranked below it."""

    order: list[str] = Field(default_factory=list)
    quantized_min_speedup: float = Field(default=1.1, ge=1.0)


class PackagePolicy(_Strict):
    """Everything that decides a verdict, as the build configured it."""

    parity: ParityPolicy = Field(default_factory=ParityPolicy)
    latency: LatencyPolicy = Field(default_factory=LatencyPolicy)
    selection: SelectionPolicy = Field(default_factory=SelectionPolicy)
