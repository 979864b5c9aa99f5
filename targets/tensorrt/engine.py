"""Build a TensorRT engine from ONNX with the real TensorRT 10.x Python API.

`build_engine` parses with `OnnxParser` (errors reported per node), applies
`BuilderSettings` to an `IBuilderConfig` (flags, workspace pool, optimization profiles,
hardware/version compatibility, timing cache) and serializes the engine. `build_from_spec`
does the same on a serving host from a deferred spec into the engine cache, and
`EngineBuildJob` runs that in a background thread. TensorRT is imported inside functions.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.core.errors import BackendUnavailable, BuildError, IntegrityError
from compiler.core.host import GpuInfo, HostInfo
from targets.tensorrt.cache import CachedEngine, EngineCache, engine_cache_key, file_digest
from targets.tensorrt.compat import CompatibilityRecord, _cc, host_can_build
from targets.tensorrt.options import BuilderSettings
from targets.tensorrt.runtime import INSTALL, import_tensorrt, trt_logger
from targets.tensorrt.spec import read_spec

__all__ = [
    "BuiltEngine",
    "EngineBuildJob",
    "ParserIssue",
    "build_engine",
    "build_from_spec",
    "check_build_gpu",
]


@dataclass(frozen=True)
class ParserIssue:
    """One OnnxParser error, with the node it names."""

    node_index: int
    node_name: str
    op: str
    code: str
    desc: str

    def line(self) -> str:
        where = (
            f"node {self.node_index} '{self.node_name}' ({self.op})"
            if self.node_index >= 0
            else "model"
        )
        return f"{where}: {self.code}: {self.desc}"


@dataclass
class BuiltEngine:
    plan: bytes
    timing_cache: bytes
    record: CompatibilityRecord
    log: list[str] = field(default_factory=list)


def check_build_gpu(settings: BuilderSettings, gpu: GpuInfo) -> list[str]:
    """What the build GPU lacks for these settings (the docs' per-architecture limits)."""
    why = []
    ampere = _cc(gpu.compute_capability) >= (8, 0)
    if settings.hardware_compatibility_level == "AMPERE_PLUS" and not ampere:
        why.append(
            f"hardware_compatibility ampere_plus needs an Ampere or newer build GPU; {gpu.name} is sm {gpu.compute_capability}"
        )
    if "BF16" in settings.builder_flags and not ampere:
        why.append(
            f"bf16 needs compute capability 8.0 or newer; {gpu.name} is sm {gpu.compute_capability}"
        )
    return why


def _parser_issues(parser: Any) -> list[ParserIssue]:
    issues = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        issues.append(
            ParserIssue(
                node_index=int(err.node()),
                node_name=str(err.node_name()),
                op=str(err.node_operator()),
                code=str(err.code()).rsplit(".", 1)[-1],
                desc=str(err.desc()),
            )
        )
    return issues


def _apply(
    trt: Any, builder: Any, network: Any, config: Any, s: BuilderSettings, onnx: Path
) -> None:
    for name in s.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in s.cleared_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if s.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_bytes)
    config.builder_optimization_level = s.builder_optimization_level
    config.hardware_compatibility_level = getattr(
        trt.HardwareCompatibilityLevel, s.hardware_compatibility_level
    )
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for i, prof in enumerate(s.profiles):
        unknown = sorted(set(prof.inputs) - inputs)
        if unknown:
            raise BuildError(
                f"{onnx.name}: profile {i} names inputs {unknown} the parsed network lacks ({sorted(inputs)})"
            )
        p = builder.create_optimization_profile()
        for name, shp in sorted(prof.inputs.items()):
            p.set_shape(name, shp.min, shp.opt, shp.max)
        config.add_optimization_profile(p)


def build_engine(
    onnx_path: Path, settings: BuilderSettings, gpu: GpuInfo, timing_cache: bytes = b""
) -> BuiltEngine:
    """Parse `onnx_path` (external data beside it), build and serialize the engine."""
    lacking = check_build_gpu(settings, gpu)
    if lacking:
        raise BuildError(f"{onnx_path.name}: cannot build this engine here: " + "; ".join(lacking))
    trt = import_tensorrt()
    log: list[str] = []
    logger = trt_logger(trt, log)
    builder = trt.Builder(logger)
    flags = 0
    for name in settings.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        issues = _parser_issues(parser)
        lines = "\n  ".join(i.line() for i in issues) or "\n  ".join(log[-5:]) or "no detail"
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path.name}:\n  {lines}")
    config = builder.create_builder_config()
    _apply(trt, builder, network, config, settings, onnx_path)
    cache = None
    if settings.timing_cache:
        cache = config.create_timing_cache(timing_cache)
        if not config.set_timing_cache(cache, False):
            log.append("WARNING: stored timing cache does not match this GPU; starting a new one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = (
            "\n  ".join(m for m in log if m.startswith(("ERROR", "INTERNAL_ERROR"))) or "see log"
        )
        raise BuildError(f"TensorRT could not build an engine from {onnx_path.name}:\n  {detail}")
    new_cache = (
        bytes(memoryview(config.get_timing_cache().serialize())) if cache is not None else b""
    )
    record = CompatibilityRecord(
        tensorrt_version=trt.__version__,
        version_compatible=settings.version_compatible,
        lean_runtime_excluded="EXCLUDE_LEAN_RUNTIME" in settings.builder_flags,
        hardware_compatibility_level=settings.hardware_compatibility_level,  # type: ignore[arg-type]
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=settings.precision,
        profiles=settings.profiles,
        settings_digest=settings.digest(),
    )
    return BuiltEngine(plan=bytes(memoryview(plan)), timing_cache=new_cache, record=record, log=log)


def build_from_spec(
    artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path, host: HostInfo
) -> CachedEngine:
    """Build a deferred (or refused prebuilt) artifact's engine into the engine cache."""
    cannot = host_can_build(host)
    if cannot:
        raise BackendUnavailable("tensorrt", "; ".join(cannot), INSTALL)
    spec = read_spec(artifact_dir / runtime["spec"])
    files = [artifact_dir / f for f in spec.onnx_files]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise IntegrityError(f"{artifact_dir}: TensorRT build spec names missing files {missing}")
    if file_digest(files) != spec.onnx_sha256:
        raise IntegrityError(f"{artifact_dir / spec.onnx}: sha256 differs from the build spec's")
    gpu, version = host.gpus[0], host.runtimes["tensorrt"]
    cache = EngineCache(cache_dir)
    timing = cache.load_timing_cache(gpu, version) if spec.settings.timing_cache else b""
    built = build_engine(artifact_dir / spec.onnx, spec.settings, gpu, timing)
    cache.store_timing_cache(gpu, version, built.timing_cache)
    key = engine_cache_key(spec.onnx_sha256, gpu, version, spec.settings_digest)
    return cache.store(key, built.plan, built.record.model_dump(mode="json"))


class EngineBuildJob:
    """A deferred engine build in a background thread: serve a fallback until `ready`.

    States: pending -> building -> ready | failed. `error` holds the failure message; the
    loader keeps serving the fallback artifact when a build fails.
    """

    def __init__(
        self, artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path, host: HostInfo
    ) -> None:
        self.artifact_dir, self.runtime, self.cache_dir, self.host = (
            artifact_dir,
            runtime,
            cache_dir,
            host,
        )
        self.state = "pending"
        self.engine: Path | None = None
        self.error = ""
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EngineBuildJob:
        if self._thread is None:
            self.state = "building"
            self._thread = threading.Thread(
                target=self._run, name="tensorrt-engine-build", daemon=True
            )
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.engine = build_from_spec(
                self.artifact_dir, self.runtime, self.cache_dir, self.host
            ).engine
            self.state = "ready"
        except Exception as exc:  # noqa: BLE001 - any failure means: keep the fallback
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build ends (or `timeout`); True when an engine is ready."""
        self._done.wait(timeout)
        return self.ready
