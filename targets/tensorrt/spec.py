"""The deferred build spec: what a serving host needs to build the engine itself.

`tensorrt_build.json` beside the ONNX prepared for TensorRT (the pipeline's fp32, fp16 or QDQ
model): the builder settings as TensorRT enum names, the preflight findings, the ONNX's
digest (the engine cache key) and why the build was deferred. Deterministic: sorted keys,
relative paths, no timestamps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compiler.core.errors import PackageError
from targets.tensorrt.options import BuilderSettings
from targets.tensorrt.preflight import MATRIX_VERSION, Finding

__all__ = ["SPEC_FILE", "BuildSpec", "read_spec", "write_spec"]

SPEC_FILE = "tensorrt_build.json"
WRITTEN_AGAINST = "TensorRT 10.x Python API (docs 10.16)"


class BuildSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    schema_name: Literal["compile-pkg/tensorrt-build-spec"] = Field(
        default="compile-pkg/tensorrt-build-spec", alias="schema"
    )
    version: Literal[1] = 1
    onnx: str
    onnx_files: list[str]
    onnx_sha256: str
    settings: BuilderSettings
    settings_digest: str
    preflight: list[Finding] = Field(default_factory=list)
    preflight_matrix: str = f"onnx-tensorrt operators.md, TensorRT {MATRIX_VERSION}"
    min_tensorrt_version: str = "10.0"
    written_against: str = WRITTEN_AGAINST
    deferred_reason: str = ""


def write_spec(out_dir: Path, spec: BuildSpec) -> str:
    data = spec.model_dump(mode="json", by_alias=True)
    (out_dir / SPEC_FILE).write_text(
        json.dumps(data, sort_keys=True, indent=2) + "\n", encoding="utf-8"
    )
    return SPEC_FILE


def read_spec(path: Path) -> BuildSpec:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackageError(f"{path}: cannot read the TensorRT build spec: {exc}") from exc
    try:
        return BuildSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise PackageError(
            f"{path}: not a TensorRT build spec this version reads ({loc}: {first['msg']}); "
            f"rebuild the package with this compile-pkg"
        ) from None
