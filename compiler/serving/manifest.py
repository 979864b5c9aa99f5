"""The package manifest (manifest.json), versioned, with one migration function per version.

The manifest has a *core* (everything that is a function of the source, the config and the
toolchain: identical for two builds of the same inputs, hashed into `core_sha256`) and
run-to-run parts kept apart: `measurements` (parity and latency records, each naming its host
and time), `selection` (what the build host would pick) and `build` (timestamps, source path,
node log). `schema/manifest.v2.json` is generated from these models
(`python -m compiler.serving.manifest`) and checked by a test.

Schema 2 (from 1): runtime settings are typed per backend (`runtime.backend` names it), the
policies that decide verdicts are recorded (`policy`), and the node cache key moved from each
artifact to the build log: it changed with every internal record layout, so it made the core
digest of identical artifacts unstable across compile-pkg versions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.core.contract import Contract
from compiler.core.errors import PackageError
from compiler.core.hashing import sha256_json
from compiler.core.host import Requirements
from compiler.core.policies import PackageMeta, PackagePolicy
from compiler.core.records import (
    ArtifactMeasurements,
    NormalizeRecord,
    PassRecord,
    RuntimeSettingsField,
)

__all__ = [
    "CORE_FIELDS",
    "ArtifactStatus",
    "SCHEMA_VERSION",
    "ArtifactEntry",
    "BuildLog",
    "FileEntry",
    "Manifest",
    "NodeLog",
    "SelectionChoice",
    "SelectionRecord",
    "core_digest",
    "manifest_json",
    "migrate",
    "read_manifest",
]

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).parent / "schema" / f"manifest.v{SCHEMA_VERSION}.json"

ArtifactStatus = Literal["built", "deferred", "skipped", "failed"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_M):
    path: str  # relative to the package root, posix
    sha256: str
    size: int


class ArtifactEntry(_M):
    id: str  # "<target>/<variant>"
    target: str
    variant: str
    backend: str
    backend_version: dict[str, str] = Field(default_factory=dict)
    precision: str
    status: ArtifactStatus
    reason: str = ""
    install: str = ""  # skipped for a missing backend: how to get it
    directory: str = ""  # artifacts/<target>.<variant>
    files: list[FileEntry] = Field(default_factory=list)
    requirements: Requirements | None = None
    runtime: RuntimeSettingsField | None = None
    portable: bool = False
    passes: list[str] = Field(default_factory=list)  # pass names applied after normalize
    notes: list[str] = Field(default_factory=list)


class SourceInfo(_M):
    name: str  # file name or torch factory
    kind: Literal["onnx", "torch"]
    sha256: str  # content digest of the source (with external data)
    normalized_sha256: str
    opset: int
    ir_version: int
    producer: str = ""


class Provenance(_M):
    tool: str
    libraries: dict[str, str]
    config: dict[str, Any]  # the resolved config, as the user would write it (a record)
    config_sha256: str
    source_git_commit: str = ""


class ReferenceInfo(_M):
    description: str
    runtime: str
    samples: int
    samples_source: str
    calibration_source: str
    files: list[FileEntry]


class SelectionChoice(_M):
    id: str
    why: str


class SelectionRecord(_M):
    """What the build host would pick, in order, and what it excluded (informational)."""

    host: str = ""
    order: list[SelectionChoice] = Field(default_factory=list)
    excluded: list[SelectionChoice] = Field(default_factory=list)


class NodeLog(_M):
    node: str
    status: str
    seconds: float
    reason: str = ""
    key: str = ""


class BuildLog(_M):
    started_at: str = ""
    finished_at: str = ""
    source_path: str = ""
    nodes: list[NodeLog] = Field(default_factory=list)
    pass_log: dict[str, PassRecord] = Field(default_factory=dict)
    normalize: NormalizeRecord = Field(default_factory=NormalizeRecord)
    emulated_verification: str = ""  # why the build's emulated aarch64 check did not run


class Manifest(_M):
    schema_version: Literal[2] = 2
    package: PackageMeta
    source: SourceInfo
    provenance: Provenance
    policy: PackagePolicy = Field(default_factory=PackagePolicy)
    contract: Contract
    reference: ReferenceInfo
    artifacts: list[ArtifactEntry]
    target_notes: dict[str, str] = Field(default_factory=dict)
    core_sha256: str = ""
    # run-to-run parts: never hashed into core_sha256
    measurements: dict[str, ArtifactMeasurements] = Field(default_factory=dict)
    selection: SelectionRecord = Field(default_factory=SelectionRecord)
    build: BuildLog = Field(default_factory=BuildLog)

    def artifact(self, artifact_id: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.id == artifact_id:
                return a
        raise PackageError(
            f"no artifact '{artifact_id}' in the package; have {[a.id for a in self.artifacts]}"
        )

    def measured(self, artifact_id: str) -> ArtifactMeasurements:
        """The artifact's measurements (created empty if it has none yet)."""
        return self.measurements.setdefault(artifact_id, ArtifactMeasurements())


CORE_FIELDS = (
    "schema_version",
    "package",
    "source",
    "provenance",
    "policy",
    "contract",
    "reference",
    "artifacts",
    "target_notes",
)


def core_digest(m: Manifest) -> str:
    return sha256_json(m.model_dump(mode="json", include=set(CORE_FIELDS)))


def manifest_json(m: Manifest) -> str:
    m.core_sha256 = core_digest(m)
    return json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=True) + "\n"


# --------------------------------------------------------------------------- migrations


def _from_v0(doc: dict[str, Any]) -> dict[str, Any]:
    """v0 (pre-release) had no schema_version and kept measurements inside each artifact."""
    measurements = {}
    for a in doc.get("artifacts", []):
        rec = {k: a.pop(k) for k in ("parity", "latency") if k in a}
        if rec:
            measurements[a["id"]] = {k: [v] for k, v in rec.items() if v}
    doc.setdefault("measurements", {}).update(measurements)
    doc["schema_version"] = 1
    return doc


def _from_v1(doc: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2: runtime settings name their backend; the cache key leaves the artifacts; the
    policies are read from the recorded config."""
    for a in doc.get("artifacts", []):
        a.pop("cache_key", None)
        runtime = a.get("runtime") or None
        if runtime is not None:
            runtime["backend"] = a["backend"]
            if a["backend"] == "openvino":
                runtime.pop("int8_method", None)
        a["runtime"] = runtime
    cfg = doc.get("provenance", {}).get("config", {})
    parity = cfg.get("parity", {})
    doc["policy"] = {
        "parity": {k: parity[k] for k in ("tolerances", "outputs") if k in parity},
        "latency": cfg.get("latency", {}),
        "selection": cfg.get("selection", {}),
    }
    build = doc.get("build", {})
    build["pass_log"] = {n: _pass_record_v1(r) for n, r in build.get("pass_log", {}).items()}
    doc["schema_version"] = 2
    return doc


_PASS_RECORD_FIELDS = ("version", "nodes_before", "nodes_after", "bytes_before", "bytes_after")


def _pass_record_v1(rec: dict[str, Any]) -> dict[str, Any]:
    """v1 pass records were flat (common fields, timing and the pass's own facts together)."""
    common = {k: rec.pop(k) for k in (*_PASS_RECORD_FIELDS, "ops_before", "ops_after") if k in rec}
    rec.pop("seconds", None)
    return {
        "name": rec.pop("pass", ""),
        **common,
        "skipped": rec.pop("skipped", ""),
        "warnings": rec.pop("warnings", []),
        "details": rec,
    }


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_v0, 1: _from_v1}


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or version < 0:
        raise PackageError(f"manifest schema_version {version!r} is not a version number")
    while version < SCHEMA_VERSION:
        doc = MIGRATIONS[version](doc)
        version = doc["schema_version"]
    if version > SCHEMA_VERSION:
        raise PackageError(
            f"manifest schema_version {version} is newer than this compile-pkg reads "
            f"({SCHEMA_VERSION}); upgrade compile-pkg"
        )
    return doc


def read_manifest(package: str | Path) -> Manifest:
    package = Path(package)
    path = package / "manifest.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackageError(f"{package}: not a package (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(doc, dict):
        raise PackageError(f"{path}: a manifest is a JSON object, got {type(doc).__name__}")
    try:
        return Manifest.model_validate(migrate(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PackageError(f"{path}: invalid manifest at {loc}: {first['msg']}") from exc


def json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://compile-pkg.dev/schema/manifest.v{SCHEMA_VERSION}.json"
    return schema


if __name__ == "__main__":
    SCHEMA_PATH.write_text(
        json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(f"wrote {SCHEMA_PATH}")
