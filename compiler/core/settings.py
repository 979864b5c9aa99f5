"""Per-backend runtime settings: what a runtime module needs to load one artifact.

A backend's build writes one of these; the manifest stores it under the artifact; the runner,
the emulated aarch64 worker and the GPU verification script hand it back to that backend's
runtime module. Frozen standard-library dataclasses (pydantic validates them where the
manifest embeds them), so bare hosts can read them with `settings_from_json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "OnnxRuntimeSettings",
    "OnnxRuntimeSpecialization",
    "OpenVinoSettings",
    "RuntimeSettings",
    "TensorRTSettings",
    "TensorShape",
    "TvmSettings",
    "settings_from_json",
    "settings_to_json",
]

_FORBID = {"extra": "forbid"}


@dataclass(frozen=True)
class OnnxRuntimeSpecialization:
    """A model bound to values of some inputs (targets/onnxruntime/specialize.py): the runner
    runs it for a call whose `inputs` hold exactly `values` (one element each), in order."""

    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    model: str
    inputs: tuple[str, ...]
    values: tuple[int | float, ...]
    folded: int = 0  # If nodes the binding removed (nested ones included)


@dataclass(frozen=True)
class OnnxRuntimeSettings:
    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    model: str
    backend: Literal["onnxruntime"] = "onnxruntime"
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # intra-op threads busy-wait between ops (ONNX Runtime's default); off can win where
    # cores are shared
    allow_spinning: bool = True
    # models bound to values their If selectors take; a call with other values runs `model`
    specializations: tuple[OnnxRuntimeSpecialization, ...] = ()


@dataclass(frozen=True)
class OpenVinoSettings:
    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    xml: str
    inference_precision: Literal["f32", "bf16", "f16"]
    backend: Literal["openvino"] = "openvino"
    device: str = "CPU"
    weights: Literal["f32", "f16"] = "f32"
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    num_threads: int = 0
    num_streams: int = 0
    cpu_pinning: bool = False
    # input shapes, each seen twice, that get a compile of their own with every dim fixed
    # (targets/openvino/runtime.py); 0: the model runs as built (what a settings record
    # without the field means; the backend's option writes 2 since OpenVINO backend 9)
    static_shapes: int = 0


@dataclass(frozen=True)
class TensorShape:
    """A tensor as a compiled library sees it: int dims are fixed, str dims symbolic."""

    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class TvmSettings:
    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    library: str
    device: Literal["cpu", "cuda"]
    inputs: tuple[TensorShape, ...]
    outputs: tuple[TensorShape, ...]
    backend: Literal["tvm"] = "tvm"
    entry: str = "main"
    shapes: Literal["dynamic", "static"] = "static"
    target: Mapping[str, Any] = field(default_factory=dict)  # TVM's own target JSON, as built
    tvm_version: str = ""
    cuda_archs: tuple[str, ...] = ()


@dataclass(frozen=True)
class TensorRTSettings:
    """A prebuilt engine (`engine`) and/or a deferred build spec (`spec`, with the ONNX model).
    `compatibility` and `profiles` are TensorRT's own records (targets/tensorrt validates them)."""

    __pydantic_config__ = _FORBID  # read by pydantic where embedded

    engine_mode: Literal["prebuilt", "deferred"]
    precision: str
    backend: Literal["tensorrt"] = "tensorrt"
    engine: str | None = None
    compatibility: Mapping[str, Any] | None = None
    spec: str | None = None
    onnx: str | None = None
    onnx_sha256: str = ""
    settings_digest: str = ""
    deferred_reason: str = ""
    profiles: tuple[Mapping[str, Any], ...] = ()


RuntimeSettings = OnnxRuntimeSettings | OpenVinoSettings | TvmSettings | TensorRTSettings

_BY_BACKEND: dict[str, type[Any]] = {
    "onnxruntime": OnnxRuntimeSettings,
    "openvino": OpenVinoSettings,
    "tvm": TvmSettings,
    "tensorrt": TensorRTSettings,
}


def settings_to_json(settings: RuntimeSettings) -> dict[str, Any]:
    """Plain JSON (tuples as lists), as the manifest stores it."""
    return json.loads(json.dumps(dataclasses.asdict(settings)))


def settings_from_json(doc: Mapping[str, Any]) -> RuntimeSettings:
    """Rebuild settings from their JSON (as the manifest stores them) without pydantic."""
    cls = _BY_BACKEND.get(str(doc.get("backend")))
    if cls is None:
        raise ValueError(f"runtime settings for unknown backend {doc.get('backend')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}")
    values = dict(doc)
    if cls is TvmSettings:
        for key in ("inputs", "outputs"):
            values[key] = tuple(
                TensorShape(t["name"], t["dtype"], tuple(t["shape"])) for t in values.get(key, ())
            )
        values["cuda_archs"] = tuple(values.get("cuda_archs", ()))
    if cls is OnnxRuntimeSettings:
        values["specializations"] = tuple(
            OnnxRuntimeSpecialization(
                s["model"], tuple(s["inputs"]), tuple(s["values"]), s.get("folded", 0)
            )
            for s in values.get("specializations", ())
        )
    for key, value in values.items():
        if isinstance(value, list):
            values[key] = tuple(value)
    return cls(**values)  # type: ignore[no-any-return]
