"""TensorRT build options and their translation into builder settings.

`TensorRTOptions` is the `compile:` block of a variant. `builder_settings` turns options, the
variant's precision and the contract's dim ranges into `BuilderSettings`: plain data naming
TensorRT enum members (`BuilderFlag.FP16`, `HardwareCompatibilityLevel.AMPERE_PLUS`...), so
the same JSON drives a build here or, deferred, on the serving host. Nothing here imports
TensorRT; `engine.py` applies the settings with the real API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal

import onnx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from compiler.core.contract import Contract, DimRange
from compiler.core.errors import ConfigError
from compiler.core.quantized import QDQ_OPS
from targets.base import BackendOptions

__all__ = [
    "BUILDER_FLAGS",
    "BuilderSettings",
    "InputProfile",
    "Profile",
    "TensorRTOptions",
    "builder_settings",
    "derive_profiles",
    "is_qdq_model",
]

# Members of tensorrt.BuilderFlag / NetworkDefinitionCreationFlag / HardwareCompatibilityLevel
# (TensorRT 10.x Python API) that settings may name.
BUILDER_FLAGS = frozenset(
    {"FP16", "BF16", "INT8", "TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"}
)
NETWORK_FLAGS = frozenset({"STRONGLY_TYPED"})
HW_LEVELS = {
    "none": "NONE",
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}
_MIB = 1 << 20


class TensorRTOptions(BackendOptions):
    """How to build a TensorRT engine for the gpu target.

    `build`: `auto` builds the engine here when this host has TensorRT and an NVIDIA GPU and
    defers it to the serving host otherwise; `prebuilt` requires building here; `deferred`
    always ships the ONNX plus builder settings for the serving host to build.
    """

    backend: Literal["tensorrt"] = "tensorrt"
    # fp16/bf16 let the builder pick those kernels; int8 comes from a quantize pass (QDQ)
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    build: Literal["auto", "prebuilt", "deferred"] = "auto"
    workspace_mib: int | None = Field(default=None, ge=1, description="None: TensorRT's default")
    builder_optimization_level: int = Field(default=3, ge=0, le=5)
    tf32: bool = Field(
        default=False, description="allow TF32 in fp32 layers (TensorRT's default is on)"
    )
    strongly_typed: bool | None = Field(
        default=None,
        description="None: on for int8 with int8_unquantized: fp32, off otherwise",
    )
    int8_unquantized: Literal["fp16", "fp32"] = Field(
        default="fp16",
        description="int8 (QDQ): what the layers without Q/DQ run in. fp16: weakly typed "
        "INT8+FP16 flags, so TensorRT may run them in fp16 (deprecated in 10.12, works in "
        "10.x); fp32: strongly typed, they run in the model's fp32 (trt-int8 can then lose "
        "to trt-fp16)",
    )
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    profiles: list[dict[str, DimRange]] = Field(
        default_factory=list,
        description="optimization profiles as dim ranges within the contract's; empty: one "
        "profile from the contract's min/opt/max",
    )
    timing_cache: bool = True
    ship_onnx: bool = Field(
        default=True, description="with a prebuilt engine, also ship ONNX + spec for rebuilds"
    )
    preflight: Literal["error", "warn"] = Field(
        default="error", description="'error': ops TensorRT cannot parse fail the build early"
    )
    min_runtime_version: str = "10.0"
    arch: Literal["x86_64", "aarch64"] | None = Field(
        default=None,
        description="CPU architecture of the serving hosts (aarch64: GH200, GB200, Jetson); "
        "None: the build host's. An engine runs only on the platform that built it, so for "
        "another architecture the build is deferred to the serving host",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TensorRTOptions:
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ValueError("exclude_lean_runtime needs version_compatible: true")
        return self

    def runtime_floor(self) -> str:
        """The oldest TensorRT that can build these options: min_runtime_version, raised to
        10.9 for HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY (new in 10.9)."""
        if self.hardware_compatibility == "same_compute_capability" and _older(
            self.min_runtime_version, "10.9"
        ):
            return "10.9"
        return self.min_runtime_version

    def compute_precision(self) -> str:
        return self.precision


def _older(a: str, b: str) -> bool:
    def parts(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split(".") if x.isdigit())

    return parts(a) < parts(b)


class InputProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: list[int]
    opt: list[int]
    max: list[int]

    def contains(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )


class Profile(BaseModel):
    """One optimization profile: min/opt/max shapes per dynamic input, and the dim ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    dims: dict[str, DimRange]
    inputs: dict[str, InputProfile]


class BuilderSettings(BaseModel):
    """Everything the TensorRT builder is told, as JSON-able names and numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    precision: str
    quantization: Literal["none", "qdq"] = "none"
    network_flags: list[str] = Field(default_factory=list)
    builder_flags: list[str] = Field(default_factory=list)
    cleared_flags: list[str] = Field(default_factory=list)
    workspace_bytes: int | None = None
    builder_optimization_level: int = 3
    hardware_compatibility_level: str = "NONE"
    profiles: list[Profile] = Field(default_factory=list)
    timing_cache: bool = True
    notes: list[str] = Field(default_factory=list)

    @property
    def version_compatible(self) -> bool:
        return "VERSION_COMPATIBLE" in self.builder_flags

    def digest(self) -> str:
        """Content hash of the settings (notes excluded): part of the engine cache key."""
        data = self.model_dump(mode="json", exclude={"notes"})
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def is_qdq_model(model: onnx.ModelProto) -> bool:
    """True when the graph carries QuantizeLinear/DequantizeLinear (explicit quantization)."""
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def derive_profiles(
    contract: Contract, overrides: Sequence[Mapping[str, DimRange]] | None = None
) -> list[Profile]:
    """Optimization profiles from the contract's dim ranges; no profile for a static model.

    Each override narrows some dims (it must stay inside the contract's range, since the
    loader validates feeds against the contract); dims it does not name keep the contract's.
    """
    dynamic = [t for t in contract.inputs if any(isinstance(d, str) for d in t.shape)]
    if not dynamic:
        if overrides:
            raise ConfigError("tensorrt: profiles given, but the model's inputs are all static")
        return []
    used = {d for t in dynamic for d in t.shape if isinstance(d, str)}
    missing = sorted(d for d in used if d not in contract.dims)
    if missing:
        raise ConfigError(
            f"tensorrt: symbolic dims {missing} have no range, and an engine needs one per "
            f"dynamic input; give it in the config (dims: {{{missing[0]}: "
            f"{{min: .., opt: .., max: ..}}}}) or with --set dims.{missing[0]}.max=N"
        )
    profiles = []
    for i, override in enumerate(overrides or [{}]):
        dims = {d: contract.dims[d] for d in sorted(used)}
        for name, r in override.items():
            if name not in used:
                raise ConfigError(
                    f"tensorrt profiles[{i}]: dim '{name}' is not a symbolic dim of an input; "
                    f"the inputs' symbolic dims are {sorted(used)}"
                )
            full = contract.dims[name]
            if r.min < full.min or r.max > full.max:
                raise ConfigError(
                    f"tensorrt profiles[{i}]: dim '{name}' range [{r.min}, {r.max}] leaves the "
                    f"contract's [{full.min}, {full.max}]; narrow it or widen dims.{name}"
                )
            dims[name] = r
        inputs = {
            t.name: InputProfile(
                min=list(t.concrete_shape(dims, "min")),
                opt=list(t.concrete_shape(dims, "opt")),
                max=list(t.concrete_shape(dims, "max")),
            )
            for t in dynamic
        }
        profiles.append(Profile(dims=dims, inputs=inputs))
    return profiles


def builder_settings(
    options: TensorRTOptions, precision: str, contract: Contract, model: onnx.ModelProto
) -> BuilderSettings:
    """Translate options + precision into builder settings, following TensorRT 10.x docs.

    fp16/bf16 set the weak-typing precision flags; int8 needs a QDQ model and builds it as a
    strongly typed network (explicit quantization: no precision flags, per the docs).
    """
    qdq = is_qdq_model(model)
    if precision == "int8" and not qdq:
        raise ConfigError(
            "tensorrt int8 needs a QDQ model (explicit quantization; implicit calibration is "
            "deprecated in TensorRT 10 and removed in 11): add a quantize pass with "
            "format qdq before the tensorrt compile, or choose precision fp16"
        )
    strongly = (
        options.strongly_typed
        if options.strongly_typed is not None
        else precision == "int8" and options.int8_unquantized == "fp32"
    )
    network_flags: list[str] = ["STRONGLY_TYPED"] if strongly else []
    flags: set[str] = set()
    cleared: set[str] = set()
    notes: list[str] = []
    if strongly:
        if precision in ("fp16", "bf16"):
            notes.append(
                f"strongly typed: layers run in the model's tensor types, so {precision} "
                f"needs a model converted to {precision}; no precision flag is set"
            )
    elif precision == "fp16":
        flags.add("FP16")
    elif precision == "bf16":
        flags.add("BF16")
    elif precision == "int8":
        mixed = options.int8_unquantized == "fp16"
        flags.update({"INT8", "FP16"} if mixed else {"INT8"})
        notes.append(
            "int8: Q/DQ layers in int8, the others in "
            + ("fp16 or fp32 as TensorRT times them" if mixed else "fp32")
            + " (weakly typed explicit quantization: INT8"
            + ("+FP16" if mixed else "")
            + " flags; deprecated in TensorRT 10.12, removed in 11)"
        )
    if strongly and precision == "int8":
        notes.append("int8: strongly typed, so layers without Q/DQ run in fp32")
    if options.tf32:
        flags.add("TF32")
    elif not strongly:
        cleared.add("TF32")
    if options.version_compatible:
        flags.add("VERSION_COMPATIBLE")
    if options.exclude_lean_runtime:
        flags.add("EXCLUDE_LEAN_RUNTIME")
    if qdq and precision != "int8":
        notes.append("model has Q/DQ nodes: TensorRT quantizes those tensors explicitly")
    return BuilderSettings(
        precision=precision,
        quantization="qdq" if qdq else "none",
        network_flags=network_flags,
        builder_flags=sorted(flags),
        cleared_flags=sorted(cleared),
        workspace_bytes=options.workspace_mib * _MIB if options.workspace_mib else None,
        builder_optimization_level=options.builder_optimization_level,
        hardware_compatibility_level=HW_LEVELS[options.hardware_compatibility],
        profiles=derive_profiles(contract, options.profiles),
        timing_cache=options.timing_cache,
        notes=notes,
    )
