"""TensorRT backend for the gpu target: a prebuilt engine, or a deferred build spec.

On a build host with TensorRT and an NVIDIA GPU (`build: auto|prebuilt`) the artifact holds
the serialized engine, its compatibility record and the timing cache; with `ship_onnx` it
also holds the ONNX and the build spec, so a serving host whose GPU or TensorRT version the
engine does not match can rebuild. Without TensorRT (or with `build: deferred`) the artifact
is status "deferred": the ONNX prepared for TensorRT plus `tensorrt_build.json`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import onnx

from compiler.core.errors import BackendUnavailable, BuildError, ConfigError, NotApplicable
from compiler.core.host import HostInfo, Requirements, probe_host
from compiler.core.settings import settings_from_json
from targets.base import Availability, Backend, BuildRequest, BuildResult
from targets.tensorrt.cache import EngineCache, file_digest
from targets.tensorrt.compat import host_can_build, resolve_tensorrt_version
from targets.tensorrt.engine import build_engine
from targets.tensorrt.options import BuilderSettings, TensorRTOptions, builder_settings
from targets.tensorrt.preflight import Finding, format_findings, preflight
from targets.tensorrt.runtime import INSTALL, default_cache_dir
from targets.tensorrt.spec import BuildSpec, write_spec

__all__ = ["TensorRTBackend", "default_cache_dir"]

ENGINE_FILE = "model.plan"
TIMING_FILE = "timing.cache"


def _count(errors: list[Finding]) -> str:
    """What the preflight's errors are about: '19 node(s) of 2 op type(s)', 'the model as
    a whole' (an opset, a tensor type) or both."""
    nodes = [f for f in errors if f.node != "<model>"]
    said = []
    if nodes:
        ops = len({f.op for f in nodes})
        said.append(f"{len(nodes)} node(s) of {ops} op type(s)")
    if len(nodes) < len(errors):
        said.append("the model as a whole")
    return " and ".join(said)


class TensorRTBackend(Backend):
    name = "tensorrt"
    version = "1"
    targets = frozenset({"gpu"})
    options_cls = TensorRTOptions

    @classmethod
    def availability(cls, target: str) -> Availability:
        """Always ok for gpu: without TensorRT here the engine build is deferred."""
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no tensorrt artifact for target '{target}'")
        return Availability(ok=True)

    @classmethod
    def runtime_availability(cls) -> Availability:
        why = host_can_build(resolve_tensorrt_version(probe_host()))
        if not why and importlib.util.find_spec("polygraphy") is None:
            why = ["Polygraphy is not importable (pip install 'polygraphy>=0.53.4')"]
        if why:
            return Availability(ok=False, reason="; ".join(why), install=INSTALL)
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        """Host facts that change what build() makes: enters the DAG's cache key."""
        host = resolve_tensorrt_version(probe_host())
        gpu = f"{host.gpus[0].name} (sm {host.gpus[0].compute_capability})" if host.gpus else "none"
        return {"tensorrt": host.runtimes.get("tensorrt", "absent"), "gpu": gpu}

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, TensorRTOptions)
        model = onnx.load(str(model_path), load_external_data=False)
        findings = preflight(model)
        errors = [f for f in findings if f.severity == "error"]
        if errors and opts.preflight == "error":
            # not applicable, not failed: nothing broke, the parser cannot take the model
            raise NotApplicable(
                f"{model_path.name}: TensorRT's ONNX parser is documented not to support "
                f"{_count(errors)}:\n  "
                f"{format_findings(errors)}\n(set compile.preflight: warn to try anyway)"
            )
        # fp16/bf16 are builder flags from the options; int8 is the quantize pass's QDQ model
        precision = "int8" if request.precision == "int8" else opts.precision
        try:
            settings = builder_settings(opts, precision, request.contract, model)
        except ConfigError as exc:
            raise BuildError(str(exc)) from exc
        host = resolve_tensorrt_version(probe_host())
        arch = opts.arch or host.arch
        cannot = host_can_build(host)
        if arch != host.arch:  # engines are per platform: the serving host builds its own
            cannot = [f"an engine for {arch} cannot be built on this {host.arch} host", *cannot]
        mode = opts.build if opts.build != "auto" else ("deferred" if cannot else "prebuilt")
        if mode == "prebuilt" and cannot:
            raise BackendUnavailable(
                "tensorrt", "build: prebuilt needs " + "; ".join(cannot), INSTALL
            )
        files: list[str] = []
        runtime: dict[str, Any] = {"engine": None, "compatibility": None}
        if mode == "prebuilt":
            try:
                files += self._prebuild(
                    model_path, out_dir, settings, host, runtime, request.cache_root
                )
            except BackendUnavailable as exc:  # e.g. a CUDA 13 TensorRT on a CUDA 12 driver
                if opts.build != "auto":
                    raise
                mode, cannot = (
                    "deferred",
                    [exc.reason + (f" ({exc.install})" if exc.install else "")],
                )
        runtime |= {
            "engine_mode": mode,
            "spec": None,
            "onnx": None,
            "precision": request.precision,
        }
        notes = [f.line() for f in findings] + settings.notes
        if mode == "deferred" or opts.ship_onnx:
            reason = (
                "build: deferred in the config" if opts.build == "deferred" else "; ".join(cannot)
            )
            files += self._ship_onnx(
                model_path,
                out_dir,
                settings,
                findings,
                opts,
                reason if mode == "deferred" else "",
                runtime,
            )
        if mode == "deferred":
            notes.append(f"engine build deferred to the serving host: {runtime['deferred_reason']}")
            return BuildResult(
                files=sorted(files),
                runtime=settings_from_json({**runtime, "backend": "tensorrt"}),
                precision=request.precision,
                notes=notes,
                requirements=self._requirements(opts, None, arch),
                status="deferred",
            )
        return BuildResult(
            files=sorted(files),
            runtime=settings_from_json({**runtime, "backend": "tensorrt"}),
            precision=request.precision,
            notes=notes,
            requirements=self._requirements(opts, runtime, arch),
            status="built",
        )

    @staticmethod
    def _ship_onnx(
        model_path: Path,
        out_dir: Path,
        settings: BuilderSettings,
        findings: list[Finding],
        opts: TensorRTOptions,
        reason: str,
        runtime: dict[str, Any],
    ) -> list[str]:
        """Copy the ONNX (and its external data) and write the build spec."""
        names = [model_path.name] + sorted(
            p.name for p in model_path.parent.iterdir() if p.is_file() and p != model_path
        )
        for n in names:
            shutil.copyfile(model_path.parent / n, out_dir / n)
        digest = file_digest([out_dir / n for n in names])
        spec = BuildSpec(
            onnx=model_path.name,
            onnx_files=names,
            onnx_sha256=digest,
            settings=settings,
            settings_digest=settings.digest(),
            preflight=findings,
            min_tensorrt_version=opts.runtime_floor(),
            deferred_reason=reason,
        )
        spec_file = write_spec(out_dir, spec)
        runtime.update(
            spec=spec_file,
            onnx=model_path.name,
            onnx_sha256=digest,
            settings_digest=spec.settings_digest,
            deferred_reason=reason,
            profiles=[p.model_dump(mode="json") for p in settings.profiles],
        )
        return [*names, spec_file]

    @staticmethod
    def _prebuild(
        model_path: Path,
        out_dir: Path,
        settings: BuilderSettings,
        host: HostInfo,
        runtime: dict[str, Any],
        cache_root: Path | None,
    ) -> list[str]:
        """Build the engine here; the timing cache is reused from and stored to the build's
        cache folder (the default root without one)."""
        gpu, version = host.gpus[0], host.runtimes["tensorrt"]
        cache = EngineCache(cache_root or default_cache_dir())
        timing = cache.timing_cache_path(gpu, version) if settings.timing_cache else None
        with cache.build_lock():  # one build per host, as on serving hosts
            built = build_engine(model_path, settings, gpu, timing)
        (out_dir / ENGINE_FILE).write_bytes(built.plan)
        files = [ENGINE_FILE]
        if built.timing_cache:
            (out_dir / TIMING_FILE).write_bytes(built.timing_cache)
            files.append(TIMING_FILE)
        record = built.record.model_copy(update={"arch": host.arch})
        runtime.update(
            engine=ENGINE_FILE,
            compatibility=record.model_dump(mode="json"),
            settings_digest=built.record.settings_digest,
            profiles=[p.model_dump(mode="json") for p in settings.profiles],
        )
        return files

    @staticmethod
    def _requirements(
        opts: TensorRTOptions, runtime: dict[str, Any] | None, arch: str
    ) -> Requirements:
        """Strict GPU requirements only for an engine that cannot be rebuilt on the host;
        `arch`: the serving hosts' CPU architecture (x86_64 or aarch64)."""
        rec = (runtime or {}).get("compatibility")
        rebuildable = runtime is None or bool(runtime.get("spec"))
        if rec is None or rebuildable:
            return Requirements(
                arch=arch,
                gpu=True,
                runtime="tensorrt",
                min_runtime_version=opts.runtime_floor(),
            )
        ccs = (
            []
            if rec["hardware_compatibility_level"] == "AMPERE_PLUS"
            else [rec["compute_capability"]]
        )
        return Requirements(
            arch=arch,
            gpu=True,
            gpu_compute_capabilities=ccs,
            runtime="tensorrt",
            min_runtime_version=rec["tensorrt_version"],
        )
