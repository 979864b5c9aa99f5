"""Engine compatibility: what an engine records about where it was built, whether a host
may run it, and the serving-time decision between prebuilt, cached, build-now and fallback.

A serialized TensorRT engine runs only on the TensorRT version that built it (unless built
version-compatible: then on that version or newer within the major) and only on the GPU
model that built it (unless built hardware-compatible: AMPERE_PLUS runs on compute
capability 8.0 and newer, SAME_COMPUTE_CAPABILITY on the same compute capability). The
checks here are pure functions of the record and a `HostInfo`, so they run anywhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from compiler.core.errors import IntegrityError
from compiler.core.host import GpuInfo, HostInfo
from targets.tensorrt.cache import EngineCache, engine_cache_key, read_engine
from targets.tensorrt.install import find_tensorrt, install_advice
from targets.tensorrt.options import Profile
from targets.tensorrt.startup import version_tuple

__all__ = [
    "CompatibilityRecord",
    "EngineDecision",
    "check_compatibility",
    "decide_engine",
    "host_can_build",
    "resolve_tensorrt_version",
    "tensorrt_flavour",
]

_AMPERE = (8, 0)


class CompatibilityRecord(BaseModel):
    """Stored beside each engine (runtime dict, manifest, engine cache)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tensorrt_version: str
    version_compatible: bool = False
    lean_runtime_excluded: bool = False
    hardware_compatibility_level: Literal["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"] = "NONE"
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: list[Profile] = Field(default_factory=list)
    settings_digest: str = ""
    arch: str = ""  # the build host's CPU architecture: engines are per platform
    cuda: str = ""  # the building TensorRT wheel's CUDA major ("cu12", "cu13"; "" unknown)


def _cc(text: str) -> tuple[int, ...]:
    return version_tuple(text) or (0,)


def _same_version(a: str, b: str) -> bool:
    ta, tb = version_tuple(a), version_tuple(b)
    n = min(len(ta), len(tb))
    return n > 0 and ta[:n] == tb[:n]


def _version_reasons(rec: CompatibilityRecord, have: str | None) -> list[str]:
    built = rec.tensorrt_version
    if have is None:
        return [f"TensorRT is not importable on this host (engine built with {built})"]
    if have == "unknown":
        return ["TensorRT is importable but its version is unknown; cannot check the engine"]
    if rec.version_compatible and not rec.lean_runtime_excluded:
        hv, bv = version_tuple(have), version_tuple(built)
        if hv[:1] != bv[:1] or hv < bv:
            return [
                f"engine is version-compatible from TensorRT {built} within major {bv[0]}; "
                f"host has {have}"
            ]
        return []
    if not _same_version(have, built):
        why = (
            "built with the lean runtime excluded"
            if rec.version_compatible
            else "not built version-compatible"
        )
        return [
            f"engine was built with TensorRT {built} and is {why}, so it needs exactly that "
            f"version; host has {have} (rebuild here, or build with version_compatible: true)"
        ]
    return []


def _gpu_reasons(rec: CompatibilityRecord, gpu: GpuInfo) -> list[str]:
    level = rec.hardware_compatibility_level
    have = f"{gpu.name} (sm {gpu.compute_capability})"
    if level == "AMPERE_PLUS":
        if _cc(gpu.compute_capability) < _AMPERE:
            return [f"engine is AMPERE_PLUS (compute capability 8.0 or newer); host GPU is {have}"]
        return []
    if _cc(gpu.compute_capability) != _cc(rec.compute_capability):
        return [
            f"engine was built for compute capability {rec.compute_capability} "
            f"({rec.gpu_name}); host GPU is {have}"
        ]
    if level == "NONE" and gpu.name != rec.gpu_name:
        return [
            f"engine was built on {rec.gpu_name} without hardware compatibility, which ties it "
            f"to that GPU model; host GPU is {have} (rebuild here, or build with "
            f"hardware_compatibility: same_compute_capability)"
        ]
    return []


def check_compatibility(
    record: CompatibilityRecord | dict[str, Any], host: HostInfo, cuda: str = ""
) -> list[str]:
    """Why this host cannot run the engine `record` describes; empty when it can.

    The engine runs on the host's first GPU (device 0, after CUDA_VISIBLE_DEVICES). `cuda` is
    this host's TensorRT wheel flavour ("cu12", "cu13"): an engine from the other CUDA major's
    build of the same TensorRT is refused (conservatively; the cache keys tell them apart too).
    """
    rec = (
        record
        if isinstance(record, CompatibilityRecord)
        else CompatibilityRecord.model_validate(record)
    )
    why = _version_reasons(rec, host.runtimes.get("tensorrt"))
    if rec.cuda and cuda and rec.cuda != cuda:
        why.append(f"engine was built by the {rec.cuda} build of TensorRT; this host's is {cuda}")
    if rec.arch and rec.arch != host.arch:
        why.append(f"engine was built on {rec.arch}; host is {host.arch}")
    if not host.gpus:
        why.append("needs an NVIDIA GPU, host has none")
    else:
        why.extend(_gpu_reasons(rec, host.gpus[0]))
    return why


def resolve_tensorrt_version(host: HostInfo, path: list[str] | None = None) -> HostInfo:
    """`host`, with a TensorRT version the host probe read as "unknown" (installed under a
    distribution name it does not list: tensorrt-cu11, -bindings, -libs) read from package
    metadata on `path` (default sys.path). Unchanged when the version is known or absent."""
    if host.runtimes.get("tensorrt") != "unknown":
        return host
    found = find_tensorrt(path)
    if found is None:
        return host
    return host.model_copy(update={"runtimes": {**host.runtimes, "tensorrt": found.version}})


@functools.lru_cache(maxsize=1)
def tensorrt_flavour() -> str:
    """This process's TensorRT's CUDA major ("cu12", "cu13", "cu11"; "" when unknown): read
    once, since what is installed does not change under a running process."""
    found = find_tensorrt()
    return found.cuda if found else ""


def host_can_build(host: HostInfo) -> list[str]:
    """Why this host cannot build TensorRT engines; empty when it can."""
    why = []
    if host.runtimes.get("tensorrt") is None:
        why.append(f"TensorRT is not importable ({install_advice()})")
    if not host.gpus:
        why.append("no NVIDIA GPU (nvidia-smi finds none)")
    return why


@dataclass(frozen=True)
class EngineDecision:
    """What the loader should do with a TensorRT artifact on this host.

    `prebuilt`/`cached`: load `engine` now. `build`: no usable engine yet, but this host can
    build one from the shipped spec into the cache (`cache_key`); serve the next fallback
    meanwhile. `fallback`: this artifact cannot serve here; `reasons` says why.
    """

    action: Literal["prebuilt", "cached", "build", "fallback"]
    engine: Path | None = None
    cache_key: str | None = None
    reasons: list[str] = field(default_factory=list)


def _digest_ok(engine: Path, sha256: str) -> bool:
    try:
        read_engine(engine, sha256)
    except (OSError, IntegrityError):
        return False
    return True


def decide_engine(
    artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path | None, host: HostInfo
) -> EngineDecision:
    """Prebuilt if compatible, else a cached engine, else build from the spec, else fall back."""
    reasons: list[str] = []
    if runtime.get("engine") and runtime.get("compatibility"):
        refused = check_compatibility(runtime["compatibility"], host, tensorrt_flavour())
        if not refused:
            return EngineDecision("prebuilt", engine=artifact_dir / runtime["engine"])
        reasons += [f"prebuilt engine refused: {r}" for r in refused]
    if not runtime.get("spec"):
        return EngineDecision(
            "fallback", reasons=reasons or ["artifact has no engine and no build spec"]
        )
    cannot = host_can_build(host)
    if cannot:
        return EngineDecision(
            "fallback", reasons=reasons + [f"cannot build here: {r}" for r in cannot]
        )
    key = engine_cache_key(
        runtime["onnx_sha256"],
        host.gpus[0],
        host.runtimes["tensorrt"],
        runtime["settings_digest"],
        tensorrt_flavour(),
    )
    if cache_dir is None:
        return EngineDecision(
            "fallback", reasons=reasons + ["no engine cache directory given for a deferred build"]
        )
    cached = EngineCache(cache_dir).lookup(key)
    if cached is not None and not _digest_ok(cached.engine, cached.sha256):
        reasons.append(
            f"cached engine {cached.engine} differs from its recorded sha256; rebuilding"
        )
        cached = None
    if cached is not None:
        refused = check_compatibility(cached.record, host, tensorrt_flavour())
        if not refused:
            return EngineDecision("cached", engine=cached.engine, cache_key=key, reasons=reasons)
        reasons += [f"cached engine refused: {r}" for r in refused]
    return EngineDecision("build", cache_key=key, reasons=reasons)
