"""The records `compile-pkg verify` writes beside a package instead of into it.

A package is never rewritten by verify (unless `--update`): its parity and latency records go
to a file of their own, by default `<package>.verify.json` beside the package folder, bound to
the package by its `core_sha256`. Serving ignores the file unless asked
(`selection.rank(..., use_verify_records=True, verify_records=records.measurements)`), so a
verify run never changes the pick by itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.core.errors import PackageError
from compiler.core.records import ArtifactMeasurements

__all__ = ["VerifyRecords", "default_records_path", "read_verify_records"]


class VerifyRecords(BaseModel):
    """Every verify run's records for one package build (each record names its host and time)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    package: str
    core_sha256: str
    measurements: dict[str, ArtifactMeasurements] = Field(default_factory=dict)

    def measured(self, artifact_id: str) -> ArtifactMeasurements:
        return self.measurements.setdefault(artifact_id, ArtifactMeasurements())

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def default_records_path(package: Path) -> Path:
    """`<package>.verify.json` beside the package folder (never inside it)."""
    package = package.resolve()
    return package.with_name(package.name + ".verify.json")


def read_verify_records(path: Path, core_sha256: str) -> VerifyRecords:
    """The records at `path`, checked to belong to the package build `core_sha256`."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        records = VerifyRecords.model_validate(doc)
    except FileNotFoundError:
        raise PackageError(f"{path}: no verify records file") from None
    except (OSError, ValueError, ValidationError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise PackageError(f"{path}: unreadable verify records ({first})") from exc
    if records.core_sha256 != core_sha256:
        raise PackageError(
            f"{path}: these verify records are for another build of the package (core "
            f"{records.core_sha256[:12]}…, the package's is {core_sha256[:12]}…); "
            "run compile-pkg verify again"
        )
    return records
