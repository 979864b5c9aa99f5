"""Load and run a TensorRT artifact: an execution context with explicit input shapes, device
buffers (targets/tensorrt/cuda.py) and CUDA-event timing around `execute_async_v3`.

Which engine to load (the package's prebuilt one if this host may run it, one cached here, or
one built from the deferred spec, in the background while the loader serves a fallback) is
decided by targets/tensorrt/resolve.py: build-side code (compatibility records, the engine
cache, the builder: pydantic) that `load` imports when a TensorRT artifact is opened. The run
path itself uses the standard library, numpy, tensorrt and a CUDA buffer library only.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable, ContractError, PackageError
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import TensorRTSettings, settings_to_json
from targets.tensorrt.cuda import Device, open_device

__all__ = [
    "INSTALL",
    "EngineBuilding",
    "TensorRTArtifact",
    "default_cache_dir",
    "import_tensorrt",
    "load",
    "select_profile",
    "trt_logger",
]

INSTALL = "pip install 'tensorrt>=10,<11' (needs an NVIDIA driver and GPU)"


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:  # also OSError-derived load failures of libnvinfer
        raise BackendUnavailable("tensorrt", f"cannot import tensorrt: {exc}", INSTALL) from exc
    return trt


def default_cache_dir() -> Path:
    """Same root as the compile cache: $COMPILE_PKG_CACHE, else $XDG_CACHE_HOME/compile-pkg."""
    env = os.environ.get("COMPILE_PKG_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compile-pkg"


def trt_logger(trt: Any, sink: list[str]) -> Any:
    """A TensorRT logger that appends errors and warnings to `sink`."""

    class _Capture(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):  # errors, warnings
                sink.append(f"{severity.name}: {msg}")

    return _Capture()


class EngineBuilding(BackendUnavailable):
    """No engine yet: one is being built from the deferred spec (`build_job`, with `state`,
    `error` and `wait()`); the loader serves a fallback meanwhile."""

    def __init__(self, build_job: Any) -> None:
        state = "failed: " + build_job.error if build_job.state == "failed" else "in progress"
        super().__init__(
            "tensorrt",
            f"engine for this GPU is being built from the deferred spec ({state}); "
            "serve a fallback until it is ready",
        )
        self.build_job = build_job


def select_profile(
    profiles: Sequence[Mapping[str, Any]], shapes: Mapping[str, tuple[int, ...]]
) -> int:
    """Index of the first optimization profile (as recorded: `inputs: {name: {min, max}}`)
    whose ranges hold every dynamic input's shape."""
    if not profiles:
        return 0

    def holds(r: Mapping[str, Any], shape: tuple[int, ...]) -> bool:
        return len(shape) == len(r["min"]) and all(
            lo <= s <= hi for lo, s, hi in zip(r["min"], shape, r["max"], strict=True)
        )

    for i, p in enumerate(profiles):
        if all(n not in shapes or holds(r, tuple(shapes[n])) for n, r in p["inputs"].items()):
            return i
    have = {k: list(v) for k, v in shapes.items()}
    ranges = [{n: [r["min"], r["max"]] for n, r in p["inputs"].items()} for p in profiles]
    raise ContractError(
        f"input shapes {have} fit none of the engine's optimization profiles {ranges}"
    )


class TensorRTArtifact:
    """A deserialized engine, its execution context and device buffers on one stream."""

    def __init__(
        self, trt: Any, engine: Path, record: Mapping[str, Any], outputs: Sequence[str], source: str
    ) -> None:
        self.record, self.source = record, source
        self.last_gpu_ms: float | None = None
        self._trt_version = str(trt.__version__)
        self._outputs = list(outputs)
        self._log: list[str] = []
        rt = trt.Runtime(trt_logger(trt, self._log))
        if record.get("version_compatible"):
            rt.engine_host_code_allowed = True  # our own engine, sha256-checked by the loader
        self._engine = rt.deserialize_cuda_engine(engine.read_bytes())
        if self._engine is None:
            raise PackageError(
                f"{engine}: TensorRT cannot deserialize this engine: {' '.join(self._log[-3:])}"
            )
        self._context = self._engine.create_execution_context()
        self._device: Device | None = open_device()
        self._io: dict[str, tuple[bool, np.dtype]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self._io[name] = (is_input, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
        self._profile = -1

    def _stage_inputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        dev, ctx = self._device, self._context
        assert dev is not None
        idx = select_profile(
            self.record.get("profiles", []), {k: v.shape for k, v in feeds.items()}
        )
        if idx != self._profile:
            ctx.set_optimization_profile_async(idx, dev.stream)
            self._profile = idx
        staged = []
        for name, (is_input, dtype) in self._io.items():
            if not is_input:
                continue
            arr = np.ascontiguousarray(feeds[name], dtype=dtype)
            if not ctx.set_input_shape(name, arr.shape):
                raise ContractError(f"input '{name}': TensorRT rejects shape {list(arr.shape)}")
            ptr = dev.buffer(name, arr.nbytes)
            dev.to_device(ptr, arr)
            ctx.set_tensor_address(name, ptr)
            staged.append(arr)  # kept alive until the copies ran
        return staged

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        dev, ctx = self._device, self._context
        assert dev is not None and ctx is not None
        staged = self._stage_inputs(feeds)
        outs: dict[str, tuple[np.ndarray, int]] = {}
        for name, (is_input, dtype) in self._io.items():
            if is_input:
                continue
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise PackageError(
                    f"output '{name}' has a data-dependent shape {list(shape)}; "
                    "not supported by this runner"
                )
            host = np.empty(shape, dtype=dtype)
            ptr = dev.buffer(name, host.nbytes)
            ctx.set_tensor_address(name, ptr)
            outs[name] = (host, ptr)
        ok = [True]

        def _execute() -> None:
            ok[0] = bool(ctx.execute_async_v3(dev.stream))

        self.last_gpu_ms = dev.timed(_execute)
        if not ok[0]:
            raise PackageError(f"TensorRT execute_async_v3 failed: {' '.join(self._log[-3:])}")
        for host, ptr in outs.values():
            dev.to_host(host, ptr)
        dev.synchronize()
        del staged
        return {n: outs[n][0] for n in self._outputs}

    def describe(self) -> RunnerInfo:
        return {
            "runtime": f"tensorrt {self._trt_version}",
            "device": str(self.record.get("gpu_name", "gpu")),
            "precision": str(self.record.get("precision", "")),
            "engine": self.source,
            "buffers": self._device.kind if self._device else "",
            "timing": "CUDA events around execute_async_v3 on the runner's stream, synchronized",
            "last_gpu_ms": self.last_gpu_ms if self.last_gpu_ms is not None else 0.0,
        }

    def sync(self) -> None:
        if self._device is not None:
            self._device.synchronize()

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
        self._context = self._engine = self._device = None


def load(
    artifact_dir: Path,
    settings: TensorRTSettings,
    outputs: Sequence[str],
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
    host: Any = None,
    background: bool = True,
) -> TensorRTArtifact:
    """The engine this host may run (see the module docstring). `cache_dir` holds engines built
    here (default: the compile cache); `background=False` builds a missing engine right away
    instead of raising EngineBuilding; `host` (a compiler.core.host.HostInfo, not imported
    here: pydantic) replaces the probe of this host."""
    resolve = importlib.import_module("targets.tensorrt.resolve")  # build side, chosen here
    engine = resolve.resolve_engine(
        artifact_dir,
        settings_to_json(settings),
        cache_dir or default_cache_dir(),
        host,
        background=background,
    )
    return TensorRTArtifact(import_tensorrt(), engine.path, engine.record, outputs, engine.source)
