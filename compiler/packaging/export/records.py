"""What an export writes beside each exported artifact (`compile_pkg.json`) and what it says it
did: the artifact's entry (files with sha256, requirements, runtime settings), its interface,
its parity and latency records and verdict, and the package it came from."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from compiler.core.contract import Contract
from compiler.core.policies import PackageMeta
from compiler.core.records import ArtifactMeasurements
from compiler.serving.manifest import ArtifactEntry

__all__ = ["EXPORT_RECORD", "ExportResult", "ExportedArtifact", "LeftOut"]

EXPORT_RECORD = "compile_pkg.json"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportedArtifact(_M):
    """One exported artifact and the evidence that travels with it."""

    name: str  # its name in the export (a Triton model, an OCI manifest's ref)
    package: PackageMeta
    core_sha256: str  # the package manifest's core: which build this is
    source_sha256: str
    signatures: str  # the package's signature status when exported
    artifact: ArtifactEntry  # files (sha256), requirements, runtime settings, precision
    contract: Contract  # what the artifact accepts (the package's, narrowed by the artifact)
    parity_verdict: str  # passed | failed | not-verified
    parity_how: str = ""
    reference: str  # what parity and latency were measured against
    measurements: ArtifactMeasurements = Field(default_factory=ArtifactMeasurements)


class LeftOut(_M):
    """An artifact the export does not carry, and why."""

    id: str
    reason: str


class ExportResult(_M):
    """What `compile-pkg export` did: the format, where, what went in and what stayed out."""

    format: str
    output: str
    exported: list[str] = Field(default_factory=list)  # names in the export
    artifacts: list[str] = Field(default_factory=list)  # the package's artifact ids, same order
    left_out: list[LeftOut] = Field(default_factory=list)
