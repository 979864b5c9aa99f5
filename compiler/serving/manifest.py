"""The package manifest (manifest.json), versioned from day one.

The manifest has a *core* (everything that is a function of the source, the config and the
toolchain: identical for two builds of the same inputs, hashed into `core_sha256`) and two
run-to-run parts kept apart: `measurements` (parity and latency records, each naming its
host and time) and `build` (timestamps, source path, node log). `schema/manifest.v1.json`
is generated from these models (`python -m compiler.serving.manifest`) and checked by a test.
Older schema versions are upgraded by one migration function per version (MIGRATIONS).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.core.contract import Contract
from compiler.core.errors import PackageError
from compiler.core.host import Requirements
from compiler.pipeline.config import PackageMeta, canonical_json

__all__ = [
    "ArtifactEntry",
    "FileEntry",
    "Manifest",
    "SCHEMA_VERSION",
    "CORE_FIELDS",
    "read_manifest",
    "manifest_json",
    "core_digest",
    "migrate",
]

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).parent / "schema" / "manifest.v1.json"


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
    status: Literal["built", "deferred", "skipped", "failed"]
    reason: str = ""
    install: str = ""
    directory: str = ""  # artifacts/<target>.<variant>
    files: list[FileEntry] = Field(default_factory=list)
    requirements: Requirements | None = None
    runtime: dict[str, Any] = Field(default_factory=dict)
    portable: bool = False
    passes: list[str] = Field(default_factory=list)  # pass names applied after normalize
    notes: list[str] = Field(default_factory=list)
    cache_key: str = ""


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
    config: dict[str, Any]
    config_sha256: str
    source_git_commit: str = ""


class ReferenceInfo(_M):
    description: str
    runtime: str
    samples: int
    samples_source: str
    calibration_source: str
    files: list[FileEntry]


class Manifest(_M):
    schema_version: Literal[1] = 1
    package: PackageMeta
    source: SourceInfo
    provenance: Provenance
    contract: Contract
    reference: ReferenceInfo
    artifacts: list[ArtifactEntry]
    target_notes: dict[str, str] = Field(default_factory=dict)
    core_sha256: str = ""
    # run-to-run parts: never hashed into core_sha256
    measurements: dict[str, dict[str, list[dict[str, Any]]]] = Field(default_factory=dict)
    selection: dict[str, Any] = Field(default_factory=dict)
    build: dict[str, Any] = Field(default_factory=dict)

    def artifact(self, artifact_id: str) -> ArtifactEntry:
        for a in self.artifacts:
            if a.id == artifact_id:
                return a
        raise PackageError(
            f"no artifact '{artifact_id}' in the package; have {[a.id for a in self.artifacts]}"
        )


CORE_FIELDS = (
    "schema_version",
    "package",
    "source",
    "provenance",
    "contract",
    "reference",
    "artifacts",
    "target_notes",
)


def core_digest(m: Manifest) -> str:
    core = m.model_dump(mode="json", include=set(CORE_FIELDS))
    return hashlib.sha256(canonical_json(core).encode()).hexdigest()


def manifest_json(m: Manifest) -> str:
    m.core_sha256 = core_digest(m)
    return json.dumps(m.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=True) + "\n"


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


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _from_v0}


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    version = doc.get("schema_version", 0)
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
    try:
        return Manifest.model_validate(migrate(doc))
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PackageError(f"{path}: invalid manifest at {loc}: {first['msg']}") from exc


def json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://compile-pkg.dev/schema/manifest.v1.json"
    return schema


if __name__ == "__main__":
    SCHEMA_PATH.write_text(
        json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(f"wrote {SCHEMA_PATH}")
