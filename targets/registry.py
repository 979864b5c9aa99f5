"""The backend registry, build side: one explicit entry per backend (its runtime module is
listed in targets/runtime_index.py).

Each entry is imported by name only; the backend's heavy library is imported inside its
methods. `BackendOptionsUnion` is the `compile:` block of a variant in the config file.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult
from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions
from targets.openvino.backend import OpenVinoBackend, OpenVinoOptions
from targets.tensorrt.backend import TensorRTBackend
from targets.tensorrt.options import TensorRTOptions
from targets.tvm.backend import TvmBackend, TvmOptions

__all__ = [
    "BACKENDS",
    "Availability",
    "Backend",
    "BackendOptions",
    "BackendOptionsUnion",
    "BuildRequest",
    "BuildResult",
    "TARGETS",
    "get_backend",
]

# The three deployment targets and the CPU architecture each one means.
TARGETS: dict[str, str] = {"cpu": "x86_64", "arm": "aarch64", "gpu": "x86_64"}

BACKENDS: dict[str, type[Backend]] = {
    OnnxRuntimeBackend.name: OnnxRuntimeBackend,
    OpenVinoBackend.name: OpenVinoBackend,
    TensorRTBackend.name: TensorRTBackend,
    TvmBackend.name: TvmBackend,
}

BackendOptionsUnion = Annotated[
    OnnxRuntimeOptions | OpenVinoOptions | TensorRTOptions | TvmOptions,
    Field(discriminator="backend"),
]


def get_backend(name: str) -> type[Backend]:
    return BACKENDS[name]
