"""Build a TensorRT engine from ONNX through Polygraphy's TensorRT loaders.

`build_engine` parses with `network_from_onnx_path` (strongly typed where the settings say;
a rejected model is parsed again with TensorRT's `OnnxParser` to name the nodes), turns
`BuilderSettings` into `CreateConfig` (precision flags, workspace pool, optimization
profiles, optimization level, hardware/version compatibility guarded by the installed
version, timing cache) and serializes with `engine_bytes_from_network`, which merges the
timing cache into its file under a file lock. `build_from_spec` does the same on a serving
host from a deferred spec into the engine cache, one build per host at a time, and
`EngineBuildJob` runs that in a background thread with retries. TensorRT and Polygraphy are
imported by targets/tensorrt/startup.py, inside functions.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.core.errors import BackendUnavailable, BuildError, IntegrityError, PackageError
from compiler.core.host import GpuInfo, HostInfo
from targets.tensorrt.cache import CachedEngine, EngineCache, engine_cache_key, file_digest
from targets.tensorrt.compat import CompatibilityRecord, _cc, host_can_build, tensorrt_flavour
from targets.tensorrt.options import BuilderSettings
from targets.tensorrt.runtime import INSTALL
from targets.tensorrt.spec import read_spec
from targets.tensorrt.startup import (
    capture,
    hardware_level,
    import_polygraphy,
    open_builder,
    process_logger,
    start_tensorrt,
)

__all__ = [
    "BuiltEngine",
    "EngineBuildJob",
    "GpuBusy",
    "ParserIssue",
    "build_engine",
    "build_from_spec",
    "check_build_gpu",
    "out_of_memory",
    "serving_settings",
]

_MIB = 1 << 20
_PORTABILITY_FLAGS = frozenset({"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"})


class GpuBusy(RuntimeError):
    """The build ran out of GPU memory (the serving process holds some): a transient failure
    that EngineBuildJob retries after its back-off."""


# how TensorRT's logger words a failed GPU allocation, as users quote it (NVIDIA/TensorRT
# issues 477 and 948): "Cuda Error in allocate: 2 (out of memory)", "OutOfMemory Error in
# ...", "Requested amount of memory (N bytes) could not be allocated"
_OOM_MARKS = ("out of memory", "outofmemory", "could not be allocated")


def out_of_memory(errors: list[str]) -> bool:
    """Whether TensorRT's error lines say a GPU allocation failed."""
    return any(mark in line.lower() for line in errors for mark in _OOM_MARKS)


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


def _diagnose_parse(trt: Any, onnx_path: Path, flags: int) -> list[ParserIssue]:
    """Parse again with TensorRT's own OnnxParser to name the nodes it rejected (Polygraphy
    logs them but raises one message)."""
    builder = open_builder(trt)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, process_logger(trt))
    parser.parse_from_file(str(onnx_path))
    return _parser_issues(parser)


def _network_flags(trt: Any, s: BuilderSettings) -> int:
    flags = 0
    for name in s.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    return flags


def _profiles(pg: Any, network: Any, s: BuilderSettings, onnx: Path) -> list[Any]:
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    out = []
    for i, prof in enumerate(s.profiles):
        unknown = sorted(set(prof.inputs) - inputs)
        if unknown:
            raise BuildError(
                f"{onnx.name}: profile {i} names inputs {unknown} the parsed network lacks "
                f"({sorted(inputs)})"
            )
        p = pg.Profile()
        for name, shp in sorted(prof.inputs.items()):
            p.add(name, min=shp.min, opt=shp.opt, max=shp.max)
        out.append(p)
    return out


def _config(
    trt: Any, pg: Any, network: Any, s: BuilderSettings, onnx: Path, timing: Path | None
) -> Any:
    """Polygraphy's CreateConfig for the settings; TF32 stays cleared unless asked for."""
    try:
        level = hardware_level(str(trt.__version__), s.hardware_compatibility_level)
    except ValueError as exc:
        raise BuildError(f"{onnx.name}: {exc}") from None
    flags = set(s.builder_flags)
    return pg.CreateConfig(
        tf32="TF32" in flags,
        fp16="FP16" in flags,
        bf16="BF16" in flags,
        int8="INT8" in flags,
        profiles=_profiles(pg, network, s, onnx) or None,
        memory_pool_limits=(
            {trt.MemoryPoolType.WORKSPACE: s.workspace_bytes} if s.workspace_bytes else None
        ),
        builder_optimization_level=s.builder_optimization_level,
        hardware_compatibility_level=(
            getattr(trt.HardwareCompatibilityLevel, level) if level else None
        ),
        version_compatible="VERSION_COMPATIBLE" in flags,
        exclude_lean_runtime="EXCLUDE_LEAN_RUNTIME" in flags,
        load_timing_cache=str(timing) if timing is not None and timing.is_file() else None,
    )


def build_engine(
    onnx_path: Path, settings: BuilderSettings, gpu: GpuInfo, timing_cache: Path | None = None
) -> BuiltEngine:
    """Parse `onnx_path` (external data beside it) and build the serialized engine with
    Polygraphy; `timing_cache` (a file) is loaded when present and saved back, merged under
    Polygraphy's file lock."""
    lacking = check_build_gpu(settings, gpu)
    if lacking:
        raise BuildError(f"{onnx_path.name}: cannot build this engine here: " + "; ".join(lacking))
    trt = start_tensorrt()
    pg = import_polygraphy()
    open_builder(trt)  # start-up failures (a CUDA 13 TensorRT on a CUDA 12 driver) say so
    strongly = "STRONGLY_TYPED" in settings.network_flags
    portable = settings.version_compatible or settings.hardware_compatibility_level != "NONE"
    # version- and hardware-compatible engines cannot hold the InstanceNormalization plugin
    parser_flags = [trt.OnnxParserFlag.NATIVE_INSTANCENORM] if portable else None
    from polygraphy.exception import PolygraphyException

    with capture() as log:
        try:
            builder, network, parser = pg.network_from_onnx_path(
                str(onnx_path), flags=parser_flags, strongly_typed=strongly
            )
        except PolygraphyException:
            issues = _diagnose_parse(trt, onnx_path, _network_flags(trt, settings))
            lines = "\n  ".join(i.line() for i in issues) or "\n  ".join(log[-5:]) or "no detail"
            raise BuildError(
                f"TensorRT's ONNX parser rejected {onnx_path.name}:\n  {lines}"
            ) from None
        config = _config(trt, pg, network, settings, onnx_path, timing_cache)
        save = str(timing_cache) if timing_cache is not None and settings.timing_cache else None
        if timing_cache is not None:
            timing_cache.parent.mkdir(parents=True, exist_ok=True)  # for the file and its lock
        try:
            plan = pg.engine_bytes_from_network((builder, network, parser), config, save)
        except PolygraphyException as exc:
            errors = [m for m in log if m.startswith(("ERROR", "INTERNAL_ERROR"))]
            detail = "\n  ".join(errors) or str(exc)
            if out_of_memory(errors):  # the GPU is busy serving: worth another try later
                raise GpuBusy(f"{onnx_path.name}: the GPU ran out of memory:\n  {detail}") from None
            raise BuildError(
                f"TensorRT could not build an engine from {onnx_path.name}:\n  {detail}"
            ) from None
    record = CompatibilityRecord(
        tensorrt_version=str(trt.__version__),
        version_compatible=settings.version_compatible,
        lean_runtime_excluded="EXCLUDE_LEAN_RUNTIME" in settings.builder_flags,
        hardware_compatibility_level=settings.hardware_compatibility_level,  # type: ignore[arg-type]
        gpu_name=gpu.name,
        compute_capability=gpu.compute_capability,
        precision=settings.precision,
        profiles=settings.profiles,
        settings_digest=settings.digest(),
        cuda=tensorrt_flavour(),
    )
    timing = timing_cache.read_bytes() if save and timing_cache and timing_cache.is_file() else b""
    return BuiltEngine(plan=bytes(memoryview(plan)), timing_cache=timing, record=record, log=log)


def serving_settings(settings: BuilderSettings, gpu: GpuInfo) -> BuilderSettings:
    """The settings a serving host builds a deferred engine with: for this GPU and TensorRT
    only (no version compatibility, so the engine never needs host code), and a workspace
    capped at a quarter of the GPU's memory (TensorRT's default is all of it, while the
    server runs; no cap when the probe did not read the memory)."""
    flags = [f for f in settings.builder_flags if f not in _PORTABILITY_FLAGS]
    notes = [*settings.notes]
    if flags != settings.builder_flags:
        notes.append("built on the serving host for its own TensorRT: version compatibility off")
    workspace = settings.workspace_bytes
    if gpu.memory_mib:
        cap = gpu.memory_mib * _MIB // 4
        workspace = min(workspace or cap, cap)
        if workspace != settings.workspace_bytes:
            notes.append(f"workspace capped at {workspace // _MIB} MiB while serving")
    return settings.model_copy(
        update={"builder_flags": flags, "workspace_bytes": workspace, "notes": notes}
    )


def build_from_spec(
    artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path, host: HostInfo
) -> CachedEngine:
    """Build a deferred (or refused prebuilt) artifact's engine into the engine cache, one
    build at a time on this host (`BuildLock`): a process that waited for another's build of
    the same engine finds it in the cache and builds nothing."""
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
    key = engine_cache_key(spec.onnx_sha256, gpu, version, spec.settings_digest, tensorrt_flavour())
    with cache.build_lock():
        done = cache.lookup(key)
        if done is not None:
            return done
        timing = cache.timing_cache_path(gpu, version) if spec.settings.timing_cache else None
        built = build_engine(
            artifact_dir / spec.onnx, serving_settings(spec.settings, gpu), gpu, timing
        )
        record = built.record.model_copy(update={"arch": host.arch})
        return cache.store(key, built.plan, record.model_dump(mode="json"))


# failures worth another try: the GPU out of memory while serving (GpuBusy is a
# RuntimeError), host memory, a file system hiccup
_TRANSIENT = (RuntimeError, MemoryError, OSError)


class EngineBuildJob:
    """A deferred engine build in a background thread: serve a fallback until `ready`.

    States: pending -> building -> ready | failed. `error` holds the failure message; the
    loader keeps serving the fallback artifact when a build fails. A transient failure is
    retried up to `attempts` times, waiting `backoff_s`, then twice that, ...; a build
    error (the parser or builder rejecting the model) or an integrity error is not.
    """

    def __init__(
        self,
        artifact_dir: Path,
        runtime: dict[str, Any],
        cache_dir: Path,
        host: HostInfo,
        *,
        attempts: int = 3,
        backoff_s: float = 30.0,
    ) -> None:
        self.artifact_dir, self.runtime, self.cache_dir, self.host = (
            artifact_dir,
            runtime,
            cache_dir,
            host,
        )
        self.attempts, self.backoff_s = max(1, attempts), backoff_s
        self.tries = 0
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
            while True:
                self.tries += 1
                try:
                    self.engine = build_from_spec(
                        self.artifact_dir, self.runtime, self.cache_dir, self.host
                    ).engine
                    self.state = "ready"
                    return
                except (BuildError, IntegrityError, PackageError) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    break
                except _TRANSIENT as exc:
                    self.error = f"{type(exc).__name__}: {exc} (try {self.tries}/{self.attempts})"
                    if self.tries >= self.attempts:
                        break
                    time.sleep(self.backoff_s * 2 ** (self.tries - 1))
        except Exception as exc:  # noqa: BLE001 - any failure means: keep the fallback
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if self.state != "ready":
                self.state = "failed"
            self._done.set()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the build ends (or `timeout`); True when an engine is ready."""
        self._done.wait(timeout)
        return self.ready
