"""The package manifest (manifest.json), versioned, with one migration function per version.

The manifest has a *core* (everything that is a function of the source, the config and the
toolchain: identical for two builds of the same inputs, hashed into `core_sha256`) and
run-to-run parts kept apart: `measurements` (parity and latency records, each naming its host
and time), `selection` (what the build host would pick), `reports` (the hashes of reports/)
and `build` (timestamps, source path, node log). `schema/manifest.v2.json` is generated from
these models (`python -m compiler.serving.manifest`) and checked by a test.

A manifest is untrusted input: `read_manifest` bounds its size and nesting, refuses duplicate
keys, validates every field (file paths are relative and stay inside the package; runtime
settings name only files their artifact lists) and recomputes `core_sha256` over the document
as read. Every failure is a `PackageError` (or `IntegrityError` for a core that does not match).

Schema 2 (from 1): runtime settings are typed per backend (`runtime.backend` names it), the
policies that decide verdicts are recorded (`policy`), the node cache key moved from each
artifact to the build log, reports are hashed, and `configured_dims` says which dim ranges the
config set (serving enforces only those ranges; of the others, a probed step, and
`equal_dims`, which are sizes the reference was seen to reject).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from compiler.core.contract import Contract
from compiler.core.errors import IntegrityError, PackageError
from compiler.core.hashing import sha256_json
from compiler.core.host import Requirements
from compiler.core.policies import PackageMeta, PackagePolicy
from compiler.core.records import (
    ArtifactMeasurements,
    NormalizeRecord,
    PassRecord,
    RuntimeSettingsField,
)
from compiler.core.settings import RuntimeSettings
from compiler.serving.migrations import migrate, validate_document

__all__ = [
    "CORE_FIELDS",
    "ArtifactEntry",
    "ArtifactStatus",
    "BuildLog",
    "FileEntry",
    "MANIFEST_FILE",
    "Manifest",
    "NodeLog",
    "Provenance",
    "ReferenceInfo",
    "SCHEMA_VERSION",
    "SelectionChoice",
    "Sha256",
    "SelectionRecord",
    "SourceInfo",
    "check_member_path",
    "core_digest",
    "document_core_digest",
    "json_schema",
    "manifest_json",
    "migrate",
    "parse_manifest",
    "read_manifest",
    "runtime_files",
]

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).parent / "schema" / f"manifest.v{SCHEMA_VERSION}.json"
MANIFEST_FILE = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20

ArtifactStatus = Literal["built", "deferred", "skipped", "failed"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]{0,63}$")  # a target or variant name


def check_member_path(path: str) -> str:
    """A path inside the package: relative, posix, no `.`/`..`/empty parts; ValueError if not."""
    if not path or len(path) > 1024 or "\\" in path or "\0" in path or path.startswith("/"):
        raise ValueError(f"path {path!r} must be relative, posix and inside the package")
    parts = path.split("/")
    if any(p in ("", ".", "..") or len(p) > 255 for p in parts):
        raise ValueError(f"path {path!r} has an empty, '.' or '..' part")
    return path


MemberPath = Annotated[str, StringConstraints(max_length=1024)]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_M):
    path: MemberPath  # relative to the package root, posix
    sha256: Sha256
    size: int = Field(ge=0)

    @model_validator(mode="after")
    def _inside(self) -> FileEntry:
        check_member_path(self.path)
        return self


def runtime_files(runtime: RuntimeSettings) -> list[str]:
    """The files a runtime opens by name, relative to its artifact's folder."""
    if runtime.backend == "onnxruntime":
        return [runtime.model, *(s.model for s in runtime.specializations)]
    if runtime.backend == "openvino":
        return [runtime.xml]
    if runtime.backend == "tvm":
        return [runtime.library]
    return [f for f in (runtime.engine, runtime.spec, runtime.onnx) if f]


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
    # The artifact's own interface when it accepts less than the package's (a library built
    # for fixed shapes pins those dims): serving checks inputs against it.
    contract: Contract | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ArtifactEntry:
        for what, name in (("target", self.target), ("variant", self.variant)):
            if not _NAME.match(name):
                raise ValueError(f"{what} {name!r} is not a valid name")
        if self.id != f"{self.target}/{self.variant}":
            raise ValueError(f"id {self.id!r} is not '{self.target}/{self.variant}'")
        if self.status in ("skipped", "failed"):
            if self.files or self.directory or self.runtime is not None:
                raise ValueError(f"{self.id} is {self.status} but lists files or runtime settings")
            return self
        if self.directory != f"artifacts/{self.target}.{self.variant}":
            raise ValueError(f"{self.id}: directory must be artifacts/{self.target}.{self.variant}")
        if not self.files or self.runtime is None or self.requirements is None:
            raise ValueError(f"{self.id} is {self.status} but lacks files, runtime or requirements")
        if {self.runtime.backend, self.requirements.runtime} != {self.backend}:
            raise ValueError(f"{self.id}: runtime settings or requirements name another backend")
        listed = {f.path for f in self.files}
        if len(listed) != len(self.files):
            raise ValueError(f"{self.id}: a file is listed twice")
        if any(not p.startswith(self.directory + "/") for p in listed):
            raise ValueError(f"{self.id}: every file must be under {self.directory}/")
        for name in runtime_files(self.runtime):
            check_member_path(name)
            if f"{self.directory}/{name}" not in listed:
                raise ValueError(
                    f"{self.id}: runtime settings name {name!r}, which is not a listed file"
                )
        return self


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
    # symbolic dims whose range the config set: serving checks inputs against these only (the
    # other ranges are build-time defaults, for sample data and engine profiles)
    configured_dims: list[str] = Field(default_factory=list)
    reference: ReferenceInfo
    artifacts: list[ArtifactEntry]
    target_notes: dict[str, str] = Field(default_factory=dict)
    core_sha256: str = ""
    # the sha256 of every other part (the run-to-run records below): recomputed on read like
    # the core's, so an edit made without recomputing it is refused; not signed (signing.py)
    records_sha256: str = ""
    # run-to-run parts: never hashed into core_sha256
    measurements: dict[str, ArtifactMeasurements] = Field(default_factory=dict)
    selection: SelectionRecord = Field(default_factory=SelectionRecord)
    reports: list[FileEntry] = Field(default_factory=list)
    build: BuildLog = Field(default_factory=BuildLog)
    _read_version: int = PrivateAttr(default=SCHEMA_VERSION)

    @property
    def reports_hashed(self) -> bool:
        """False for a package written before schema 2 hashed reports/."""
        return self._read_version >= SCHEMA_VERSION

    @model_validator(mode="after")
    def _closed_file_set(self) -> Manifest:
        ids = [a.id for a in self.artifacts]
        if len(set(ids)) != len(ids):
            raise ValueError("an artifact id is listed twice")
        unknown = sorted(set(self.measurements) - set(ids))
        if unknown:
            raise ValueError(f"measurements for artifacts the package does not have: {unknown}")
        for folder, entries in (("reference", self.reference.files), ("reports", self.reports)):
            if any(not f.path.startswith(folder + "/") for f in entries):
                raise ValueError(f"every {folder} file must be under {folder}/")
        paths = [f.path for f in self.all_files()]
        if len(set(paths)) != len(paths):
            raise ValueError("a file is listed twice")
        if MANIFEST_FILE in paths:
            raise ValueError(f"{MANIFEST_FILE} cannot list itself")
        dims = set(self.contract.symbolic_dims())
        if not set(self.configured_dims) <= dims:
            raise ValueError(f"configured_dims {self.configured_dims} are not all dims {dims}")
        return self

    def all_files(self) -> list[FileEntry]:
        """Every file the package holds besides manifest.json (and its signatures)."""
        return [
            *(f for a in self.artifacts for f in a.files),
            *self.reference.files,
            *self.reports,
        ]

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
    "configured_dims",
    "reference",
    "artifacts",
    "target_notes",
)


def document_core_digest(doc: dict[str, Any]) -> str:
    """The core digest of a manifest document as read: absent fields are left out (as
    version 1 did), so a field added later does not change the digest of older packages."""
    return sha256_json({k: doc[k] for k in CORE_FIELDS if k in doc})


DIGEST_FIELDS = ("core_sha256", "records_sha256")


def document_records_digest(doc: dict[str, Any]) -> str:
    """The digest of everything in a manifest document that is neither core nor a digest."""
    return sha256_json({k: v for k, v in doc.items() if k not in (*CORE_FIELDS, *DIGEST_FIELDS)})


def core_digest(m: Manifest) -> str:
    return document_core_digest(m.model_dump(mode="json", include=set(CORE_FIELDS)))


def manifest_json(m: Manifest) -> str:
    m.core_sha256 = core_digest(m)
    doc = m.model_dump(mode="json")
    m.records_sha256 = doc["records_sha256"] = document_records_digest(doc)
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=True) + "\n"


def parse_manifest(text: str | bytes, where: str = MANIFEST_FILE) -> Manifest:
    """Validate a manifest document; PackageError (IntegrityError for the core) if it is bad."""
    doc = validate_document(text, where)
    recorded = doc.get("core_sha256")
    digest = document_core_digest(doc)
    records = document_records_digest(doc)
    version = doc.get("schema_version", 0)
    m = _validate(migrate(doc), where)
    if version == SCHEMA_VERSION or recorded:
        if recorded != digest:
            raise IntegrityError(
                f"{where}: core_sha256 does not match the manifest's core (edited after it was "
                "written); rebuild or re-download the package"
            )
    if version == SCHEMA_VERSION and m.records_sha256 != records:
        raise IntegrityError(
            f"{where}: records_sha256 does not match the manifest's measurements, selection, "
            "reports and build log (edited after they were written); rebuild or re-download "
            "the package"
        )
    m.core_sha256 = digest
    m.records_sha256 = records
    m._read_version = version
    return m


def _validate(doc: dict[str, Any], where: str) -> Manifest:
    try:
        return Manifest.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PackageError(f"{where}: invalid manifest at {loc}: {first['msg']}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise PackageError(f"{where}: invalid manifest ({type(exc).__name__}: {exc})") from None


def read_manifest(package: str | Path) -> Manifest:
    package = Path(package)
    path = package / MANIFEST_FILE
    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise PackageError(f"{package}: not a package (no {MANIFEST_FILE})") from None
    except OSError as exc:
        raise PackageError(f"{path}: unreadable manifest ({exc})") from exc
    if len(text) > MAX_MANIFEST_BYTES:
        raise PackageError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; not a manifest")
    return parse_manifest(text, str(path))


def json_schema() -> dict[str, Any]:
    schema = Manifest.model_json_schema()
    # Derived fields (a record's host `isa_class`) are written out and recomputed on read:
    # list them, optional and read-only, so a manifest as written validates.
    written = Manifest.model_json_schema(mode="serialization")["$defs"]
    for name, definition in schema["$defs"].items():
        for prop, spec in written.get(name, {}).get("properties", {}).items():
            if spec.get("readOnly"):
                definition.setdefault("properties", {}).setdefault(prop, spec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://compile-pkg.dev/schema/manifest.v{SCHEMA_VERSION}.json"
    return schema


if __name__ == "__main__":
    SCHEMA_PATH.write_text(
        json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    print(f"wrote {SCHEMA_PATH}")
