"""Run a TensorRT engine: execution context, explicit input shapes, device buffers.

`TensorRTRunner.load` decides (see compat.decide_engine) between the package's prebuilt
engine, an engine cached on this host, and building one from the deferred spec: in the
background (the loader serves a fallback meanwhile, see `SwitchingRunner`) or, with
`background=False`, right away. Timing is CUDA-event based around `execute_async_v3`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable, ContractError, PackageError
from compiler.core.host import HostInfo, probe_host
from targets.base import Runner
from targets.tensorrt.cache import EngineCache
from targets.tensorrt.compat import CompatibilityRecord, EngineDecision, decide_engine
from targets.tensorrt.cuda import Device, open_device
from targets.tensorrt.engine import EngineBuildJob, _logger, build_from_spec, import_tensorrt
from targets.tensorrt.options import Profile

__all__ = ["SwitchingRunner", "TensorRTRunner", "select_profile"]

_JOBS: dict[tuple[str, str], EngineBuildJob] = {}  # one build per (cache, key) per process
_JOBS_LOCK = threading.Lock()


def select_profile(profiles: list[Profile], shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Index of the first profile whose ranges hold every dynamic input's shape."""
    if not profiles:
        return 0
    for i, p in enumerate(profiles):
        if all(
            name not in shapes or ip.contains(tuple(shapes[name])) for name, ip in p.inputs.items()
        ):
            return i
    have = {k: list(v) for k, v in shapes.items()}
    raise ContractError(
        f"input shapes {have} fit none of the engine's optimization profiles "
        f"{[{n: [ip.min, ip.max] for n, ip in p.inputs.items()} for p in profiles]}"
    )


def _start_job(
    key: str, artifact_dir: Path, runtime: dict[str, Any], cache_dir: Path, host: HostInfo
) -> EngineBuildJob:
    with _JOBS_LOCK:
        slot = (str(Path(cache_dir).resolve()), key)
        job = _JOBS.get(slot)
        if job is None:  # a failed build is not retried in this process
            job = _JOBS[slot] = EngineBuildJob(artifact_dir, runtime, cache_dir, host).start()
        return job


class TensorRTRunner(Runner):
    def __init__(
        self,
        artifact_dir: Path,
        runtime: dict[str, Any],
        contract: Contract,
        cache_dir: Path | None = None,
        *,
        host: HostInfo | None = None,
        background: bool = True,
    ) -> None:
        super().__init__(contract)
        self.artifact_dir, self.runtime = artifact_dir, runtime
        self.cache_dir, self.host, self.background = cache_dir, host, background
        self.decision: EngineDecision | None = None
        self.build_job: EngineBuildJob | None = None
        self.record: CompatibilityRecord | None = None
        self.last_gpu_ms: float | None = None
        self._engine: Any = None
        self._context: Any = None
        self._device: Device | None = None
        self._profile = -1
        self._io: dict[str, tuple[bool, np.dtype]] = {}
        self._trt_version = ""

    def _resolve(self, host: HostInfo) -> tuple[Path, str]:
        d = self.decision = decide_engine(self.artifact_dir, self.runtime, self.cache_dir, host)
        if d.action in ("prebuilt", "cached"):
            assert d.engine is not None
            return d.engine, d.action
        if d.action == "fallback":
            raise BackendUnavailable("tensorrt", "; ".join(d.reasons))
        assert self.cache_dir is not None and d.cache_key is not None
        if self.background:
            self.build_job = _start_job(
                d.cache_key, self.artifact_dir, self.runtime, self.cache_dir, host
            )
            if not self.build_job.ready:
                state = (
                    "failed: " + self.build_job.error
                    if self.build_job.state == "failed"
                    else "in progress"
                )
                raise BackendUnavailable(
                    "tensorrt",
                    f"engine for this GPU is being built from the deferred spec ({state}); "
                    f"serve a fallback until it is ready",
                )
            return EngineCache(self.cache_dir).entry(d.cache_key) / "engine.plan", "cached"
        return build_from_spec(
            self.artifact_dir, self.runtime, self.cache_dir, host
        ).engine, "built now"

    def load(self) -> None:
        host = self.host or probe_host()
        path, self._source = self._resolve(host)
        trt = import_tensorrt()
        self._trt_version = trt.__version__
        rec = self.runtime.get("compatibility") if self._source == "prebuilt" else None
        if rec is None:
            rec = EngineCache(self.cache_dir).lookup(self.decision.cache_key).record  # type: ignore[arg-type, union-attr]
        self.record = CompatibilityRecord.model_validate(rec)
        self._log: list[str] = []
        rt = trt.Runtime(_logger(trt, self._log))
        if self.record.version_compatible:
            rt.engine_host_code_allowed = True  # our own engine, sha256-checked by the loader
        self._engine = rt.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise PackageError(
                f"{path}: TensorRT cannot deserialize this engine: {' '.join(self._log[-3:])}"
            )
        self._context = self._engine.create_execution_context()
        self._device = open_device()
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self._io[name] = (is_input, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
        self._profile = -1

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
        self._context = self._engine = self._device = None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dev, ctx = self._device, self._context
        assert dev is not None and ctx is not None and self.record is not None
        idx = select_profile(self.record.profiles, {k: v.shape for k, v in feeds.items()})
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
            staged.append(arr)
        outs: dict[str, tuple[np.ndarray, int]] = {}
        for name, (is_input, dtype) in self._io.items():
            if is_input:
                continue
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise PackageError(
                    f"output '{name}' has a data-dependent shape {list(shape)}; not supported by this runner"
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
        want = {o.name: np.dtype(o.dtype) for o in self.contract.outputs}
        return {
            n: h.astype(want.get(n, h.dtype), copy=False) for n, (h, _) in outs.items() if n in want
        }

    def describe(self) -> dict[str, Any]:
        rec = self.record
        return {
            "runtime": f"tensorrt {self._trt_version}",
            "device": rec.gpu_name if rec else "gpu",
            "precision": rec.precision if rec else "",
            "engine": getattr(self, "_source", ""),
            "buffers": self._device.kind if self._device else "",
            "timing": "CUDA events around execute_async_v3 on the runner's stream, synchronized",
            "last_gpu_ms": self.last_gpu_ms,
        }


class SwitchingRunner(Runner):
    """Serve `fallback` until `pending`'s background engine build is ready, then switch.

    `pending` is a runner whose `load()` raised while its `build_job` (an EngineBuildJob)
    runs. If the build fails, or loading the new engine fails, keep serving the fallback;
    `describe()` says which is serving and why.
    """

    def __init__(self, fallback: Runner, pending: Runner) -> None:
        super().__init__(fallback.contract)
        self.fallback, self.pending = fallback, pending
        self.active: Runner = fallback
        self.note = "serving the fallback while the TensorRT engine builds"

    def load(self) -> None:
        self.fallback.load()

    def close(self) -> None:
        self.fallback.close()
        if self.active is self.pending:
            self.pending.close()

    def _maybe_switch(self) -> None:
        job: EngineBuildJob | None = getattr(self.pending, "build_job", None)
        if self.active is self.pending or job is None or job.state == "building":
            return
        if job.state == "failed":
            self.note = f"TensorRT engine build failed, serving the fallback: {job.error}"
            return
        try:
            self.pending.load()
        except Exception as exc:  # noqa: BLE001 - keep serving the fallback
            self.note = f"TensorRT engine built but did not load, serving the fallback: {exc}"
            self.pending.build_job = None  # type: ignore[attr-defined]
            return
        self.active, self.note = self.pending, "switched to the TensorRT engine built on this host"

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self._maybe_switch()
        return self.active.run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.active._run(feeds)

    def describe(self) -> dict[str, Any]:
        return {**self.active.describe(), "switching": self.note}
