"""Which engine a TensorRT artifact loads on this host, building one if it must.

`resolve_engine` follows compat.decide_engine: the package's prebuilt engine if this host may
run it, an engine cached here, or a build from the deferred spec: in a background thread (one
per engine per process; `EngineBuilding` says a fallback should serve meanwhile) or, with
`background=False`, right away. targets/tensorrt/runtime.py imports this when it loads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.core.errors import BackendUnavailable, PackageError
from compiler.core.host import HostInfo, probe_host
from targets.tensorrt.cache import EngineCache, read_engine
from targets.tensorrt.compat import CompatibilityRecord, decide_engine, resolve_tensorrt_version
from targets.tensorrt.engine import EngineBuildJob, build_from_spec
from targets.tensorrt.runtime import EngineBuilding
from targets.tensorrt.startup import open_runtime, recent_errors, start_tensorrt

__all__ = ["ResolvedEngine", "deserialize", "host_code_allowed", "resolve_engine"]

_JOBS: dict[tuple[str, str], EngineBuildJob] = {}  # one build per (cache, key) per process
_JOBS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ResolvedEngine:
    path: Path
    record: dict[str, Any]  # its CompatibilityRecord, as JSON
    source: str  # prebuilt | cached | built now
    sha256: str = ""  # a cached engine's recorded digest ("" for the package's own engine)


def _start_job(
    key: str, artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path, host: HostInfo
) -> EngineBuildJob:
    with _JOBS_LOCK:
        slot = (str(Path(cache_dir).resolve()), key)
        job = _JOBS.get(slot)
        if job is None:  # a failed build is not retried in this process
            job = _JOBS[slot] = EngineBuildJob(artifact_dir, runtime, cache_dir, host).start()
        return job


def _cached(cache_dir: Path, key: str) -> tuple[dict[str, Any], str]:
    cached = EngineCache(cache_dir).lookup(key)
    if cached is None:
        raise PackageError(f"engine cache entry {EngineCache(cache_dir).entry(key)} is incomplete")
    return cached.record, cached.sha256


def resolve_engine(
    artifact_dir: Path,
    runtime: dict[str, Any],
    cache_dir: Path,
    host: HostInfo | None = None,
    *,
    background: bool = True,
) -> ResolvedEngine:
    """The engine file to load and its record; BackendUnavailable (EngineBuilding while a
    background build runs) when there is none for this host."""
    host = resolve_tensorrt_version(host or probe_host())
    d = decide_engine(artifact_dir, runtime, cache_dir, host)
    sha = ""
    if d.action == "fallback":
        raise BackendUnavailable("tensorrt", "; ".join(d.reasons))
    if d.action == "prebuilt":
        assert d.engine is not None
        path, record, source = d.engine, runtime["compatibility"], "prebuilt"
    elif d.action == "cached":
        assert d.engine is not None and d.cache_key is not None
        path, source = d.engine, "cached"
        record, sha = _cached(cache_dir, d.cache_key)
    elif background:
        assert d.cache_key is not None
        job = _start_job(d.cache_key, artifact_dir, runtime, cache_dir, host)
        if not job.ready:
            raise EngineBuilding(job)
        path = EngineCache(cache_dir).entry(d.cache_key) / "engine.plan"
        (record, sha), source = _cached(cache_dir, d.cache_key), "cached"
    else:
        built = build_from_spec(artifact_dir, runtime, cache_dir, host)
        path, record, source, sha = built.engine, built.record, "built now", built.sha256
    checked = CompatibilityRecord.model_validate(record)
    return ResolvedEngine(path, checked.model_dump(mode="json"), source, sha)


def host_code_allowed(engine: ResolvedEngine) -> bool:
    """Engine host code (the lean runtime a version-compatible engine embeds) runs only for the
    package's own prebuilt engine: its bytes were checked against the manifest, and the loader
    loads it only from a package whose signature the trust policy accepts (or where the policy
    allows unsigned native code). Engines built here never need it (built for this TensorRT)."""
    return engine.source == "prebuilt" and bool(engine.record.get("version_compatible"))


def deserialize(engine: ResolvedEngine) -> Any:
    """The ICudaEngine: a cached engine's bytes checked against its digest first, then
    deserialized by this process's runtime; every failure is BackendUnavailable/PackageError."""
    plan = read_engine(engine.path, engine.sha256) if engine.sha256 else engine.path.read_bytes()
    trt = start_tensorrt()
    rt = open_runtime(trt)
    rt.engine_host_code_allowed = host_code_allowed(engine)
    cuda_engine = rt.deserialize_cuda_engine(plan)
    if cuda_engine is None:
        raise PackageError(
            f"{engine.path}: TensorRT cannot deserialize this engine: {' '.join(recent_errors())}"
        )
    return cuda_engine
