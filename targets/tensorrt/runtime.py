"""Load and run a TensorRT artifact with Polygraphy's `TrtRunner`: it sets input shapes and
the optimization profile, keeps shape-tensor inputs in host memory, gives data-dependent
outputs (NonZero, NonMaxSuppression) an output allocator and owns the device buffers. It also
reuses its host output buffers from one inference to the next, so every output is copied
before the request's lock is released; bf16/fp8 engine I/O, which numpy cannot name, goes in
as bits and comes back as raw bytes decoded to float32 (targets/tensorrt/dtypes.py).

Which engine to load (the package's prebuilt one if this host may run it, one cached here, or
one built from the deferred spec, in the background while the loader serves a fallback) and
its deserialization (bytes checked against their digest first; engine host code only for
the package's own prebuilt engine) are done by targets/tensorrt/resolve.py: build-side code
that `load` imports when a TensorRT artifact is opened. This module itself imports the
standard library, numpy and the bare vocabulary only; TensorRT and Polygraphy come with the
first artifact.
"""

from __future__ import annotations

import importlib
import inspect
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable, ContractError, PackageError
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import TensorRTSettings, settings_to_json
from targets.tensorrt.dtypes import BITS_TYPES, NUMPY_TYPES, decode_output, encode_input
from targets.tensorrt.install import expose_cudart, find_tensorrt

__all__ = [
    "INSTALL",
    "RAW_BUFFERS_POLYGRAPHY",
    "EngineBuilding",
    "TensorRTArtifact",
    "default_cache_dir",
    "io_types",
    "load",
    "select_profile",
]

INSTALL = (
    "pip install 'compile-pkg[tensorrt-cu13]' (NVIDIA driver R580+) or "
    "'compile-pkg[tensorrt-cu12]' (R525+); compile-pkg doctor says which fits this host"
)
RAW_BUFFERS_POLYGRAPHY = "0.49.18"  # TrtRunner.infer(return_raw_buffers=...) appeared there


def default_cache_dir() -> Path:
    """Same root as the compile cache: $COMPILE_PKG_CACHE, else $XDG_CACHE_HOME/compile-pkg
    (compiler.core.files.default_cache_root's rule, restated: serving's runtime modules
    import only the bare modules, tests/targets/test_runtime_modules.py)."""
    env = os.environ.get("COMPILE_PKG_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compile-pkg"


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
    """A deserialized engine run by Polygraphy's TrtRunner; one request at a time (TensorRT
    execution contexts are not thread-safe), on the profile that holds the feeds' shapes."""

    def __init__(
        self, engine: Any, record: Mapping[str, Any], outputs: Sequence[str], source: str
    ) -> None:
        try:
            from polygraphy.backend.trt import TrtRunner
        except ImportError as exc:
            raise BackendUnavailable(
                "tensorrt", f"cannot import polygraphy: {exc}", "pip install 'polygraphy>=0.53.4'"
            ) from exc

        self.record, self.source = record, source
        self.last_ms: float | None = None
        self._outputs = list(outputs)
        self._lock = threading.Lock()
        self._profile = 0
        self._inputs, out_types = io_types(engine)
        missing = [n for n in self._outputs if n not in out_types]
        if missing:
            raise PackageError(
                f"TensorRT engine has no output {missing} (it has {sorted(out_types)}); "
                "rebuild the package"
            )
        self._out_types = {n: out_types[n] for n in self._outputs}
        unknown = sorted(
            f"{n} ({t})"
            for n, t in {**self._inputs, **out_types}.items()
            if t not in NUMPY_TYPES and t not in BITS_TYPES
        )
        if unknown:
            raise PackageError(f"TensorRT engine I/O types numpy cannot carry: {unknown}")
        # bf16/fp8 outputs come back as raw bytes (numpy has no such dtype)
        self._raw = any(t in BITS_TYPES for t in self._out_types.values())
        if (
            self._raw
            and "return_raw_buffers" not in inspect.signature(TrtRunner.infer_impl).parameters
        ):
            raise BackendUnavailable(
                "tensorrt",
                "this engine has bf16/fp8 outputs, which this Polygraphy cannot return",
                f"pip install 'polygraphy>={RAW_BUFFERS_POLYGRAPHY}'",
            )
        installed = find_tensorrt()
        cudart = expose_cudart(installed.cuda if installed else "")  # for Polygraphy's wrapper
        self._runner: Any = TrtRunner(engine, name="compile-pkg")
        try:
            self._runner.activate()
        except Exception as exc:  # no CUDA runtime library, out of memory, ...
            where = f"CUDA runtime from {cudart}" if cudart else "no CUDA runtime wheel found"
            raise BackendUnavailable(
                "tensorrt",
                f"TensorRT engine loaded but Polygraphy's TrtRunner cannot start ({where}): {exc}",
                INSTALL,
            ) from exc

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            runner = self._runner
            if runner is None:
                raise PackageError("this TensorRT artifact was closed")
            idx = select_profile(
                self.record.get("profiles", []), {k: v.shape for k, v in feeds.items()}
            )
            if idx != self._profile:
                runner.set_profile(idx)
                self._profile = idx
            feed = {
                k: encode_input(np.asarray(v), self._inputs.get(k, "")) for k, v in feeds.items()
            }
            # Polygraphy's input check knows no numpy dtype for bf16/fp8 bits
            check = not any(self._inputs.get(k) in BITS_TYPES for k in feed)
            try:
                if self._raw:
                    outs = runner.infer(feed, check_inputs=check, return_raw_buffers=True)
                else:
                    outs = runner.infer(feed, check_inputs=check)
            except Exception as exc:  # Polygraphy raises its own exception type
                raise PackageError(f"TensorRT inference failed: {exc}") from exc
            self.last_ms = float(runner.last_inference_time()) * 1e3
            # copies, made under the lock: the runner reuses its output buffers next time
            if self._raw:
                return {
                    n: decode_output(outs[n].array, self._out_types[n], tuple(outs[n].shape))
                    for n in self._outputs
                }
            return {n: np.array(outs[n], copy=True) for n in self._outputs}

    def describe(self) -> RunnerInfo:
        return {
            "runtime": f"tensorrt {self.record.get('tensorrt_version', '')}",
            "device": str(self.record.get("gpu_name", "gpu")),
            "precision": str(self.record.get("precision", "")),
            "engine": self.source,
            "buffers": "polygraphy",
            "timing": "Polygraphy TrtRunner.last_inference_time: host wall time of infer, "
            "copies included, stream synchronized",
            "last_ms": self.last_ms if self.last_ms is not None else 0.0,
        }

    def sync(self) -> None:
        """TrtRunner.infer returns with its stream synchronized; nothing is in flight."""

    def close(self) -> None:
        with self._lock:
            if self._runner is not None:
                self._runner.deactivate()
            self._runner = None


def io_types(engine: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The engine's input and output tensors with their `trt.DataType` member names."""
    inputs: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        kind = getattr(engine.get_tensor_mode(name), "name", "")
        dtype = getattr(engine.get_tensor_dtype(name), "name", "")
        (inputs if kind == "INPUT" else outputs)[name] = dtype
    return inputs, outputs


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
    return TensorRTArtifact(resolve.deserialize(engine), engine.record, outputs, engine.source)
