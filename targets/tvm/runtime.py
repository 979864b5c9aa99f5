"""Load and run a TVM artifact: a shared library run by the Relax VM on the CPU or a CUDA GPU.

Needs only TVM's runtime library (a runtime-only TVM, `TVM_USE_RUNTIME_LIB=1`, is enough), and
imports nothing but the standard library, numpy and tvm (when an artifact loads): the serving
runner, the emulated aarch64 worker and scripts/gpu_verify.py all run artifacts through here.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable, ContractError, PackageError
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import TvmSettings

__all__ = ["INSTALL", "TvmArtifact", "load"]

INSTALL = "pip install 'apache-tvm>=0.27,<0.28' 'apache-tvm-ffi<0.1.15'"


def _tvm() -> Any:
    try:
        import tvm
        import tvm.runtime.vm  # noqa: F401 - the Relax VM, also in a runtime-only TVM
    except ImportError as exc:
        raise BackendUnavailable("tvm", f"cannot import tvm: {exc}", INSTALL) from exc
    return tvm


def _ensure_cuda_runtime(tvm: Any) -> None:
    """Load TVM's CUDA runtime library; in runtime-only mode TVM does not load it itself."""
    if tvm.get_global_func("device_api.cuda", allow_missing=True) is not None:
        return
    lib_dir = Path(tvm.base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        ctypes.CDLL(str(lib_dir / "libtvm_runtime_cuda.so"), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        raise BackendUnavailable(
            "tvm",
            f"cannot load {lib_dir / 'libtvm_runtime_cuda.so'}: {exc}",
            "needs an NVIDIA driver (libcuda.so.1) and libcudart.so.13 beside libtvm_runtime.so",
        ) from exc


def _device(tvm: Any, settings: TvmSettings, threads: int | None) -> Any:
    if settings.device == "cuda":
        _ensure_cuda_runtime(tvm)
        dev = tvm.cuda(0)
        if not dev.exist:
            raise BackendUnavailable("tvm", "no CUDA device visible to TVM", "run on a GPU host")
        return dev
    if threads:
        tvm.get_global_func("runtime.config_threadpool")(1, threads)
    return tvm.cpu(0)


class TvmArtifact:
    """The library's entry function on one device; inputs in the entry's parameter order."""

    def __init__(
        self,
        tvm: Any,
        library: Path,
        vm: Any,
        dev: Any,
        settings: TvmSettings,
        outputs: Sequence[str],
        threads: int | None,
    ) -> None:
        self._tvm, self._library, self._vm, self._dev = tvm, library, vm, dev
        self._fn = vm[settings.entry]
        self._settings = settings
        self._outputs = list(outputs)
        self._threads = threads

    def _check_static(self, feeds: Mapping[str, np.ndarray]) -> None:
        for spec in self._settings.inputs:
            got = list(feeds[spec.name].shape)
            if len(got) != len(spec.shape) or any(
                isinstance(w, int) and w != g for w, g in zip(spec.shape, got, strict=True)
            ):
                raise ContractError(
                    f"input '{spec.name}': shape {got}, but this tvm artifact ({self._library}) "
                    f"was built for {list(spec.shape)}; rebuild it with compile.shapes: dynamic, "
                    "or feed that shape"
                )

    def _args(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        self._check_static(feeds)
        return [
            self._tvm.runtime.tensor(np.ascontiguousarray(feeds[s.name]), self._dev)
            for s in self._settings.inputs
        ]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self._fn(*self._args(feeds))
        outs = [out] if isinstance(out, self._tvm.runtime.Tensor) else list(out)
        if len(outs) != len(self._outputs):
            raise PackageError(
                f"{self._library}: entry '{self._settings.entry}' returned {len(outs)} outputs, "
                f"the contract has {self._outputs}"
            )
        return {name: o.numpy() for name, o in zip(self._outputs, outs, strict=True)}

    def resident_call(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], None]:
        """A call on inputs copied to the device once (outputs stay there): what device-resident
        latency times, with `sync()` after it."""
        args = self._args(feeds)
        return lambda: self._fn(*args)

    def describe(self) -> RunnerInfo:
        info: RunnerInfo = {
            "runtime": f"tvm {getattr(self._tvm, '__version__', 'unknown')}",
            "device": self._settings.device,
            "runtime_only": bool(self._tvm.base._RUNTIME_ONLY),
            "shapes": self._settings.shapes,
        }
        if self._settings.device == "cpu":
            info["threads"] = self._threads or int(
                os.environ.get("TVM_NUM_THREADS", 0) or (os.cpu_count() or 1)
            )
        elif self._dev is not None:
            info["device_name"] = str(self._dev.device_name)
            info["compute_version"] = str(self._dev.compute_version)
        return info

    def sync(self) -> None:
        """Wait for queued device work (CUDA); a no-op on CPU."""
        if self._dev is not None:
            self._dev.sync()

    def close(self) -> None:
        self._fn = self._vm = self._dev = None


def load(
    artifact_dir: Path,
    settings: TvmSettings,
    outputs: Sequence[str],
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> TvmArtifact:
    """Load `settings.library` into a Relax VM on the CPU (`threads` workers, if given) or the
    first CUDA device."""
    tvm = _tvm()
    dev = _device(tvm, settings, threads)
    library = artifact_dir / settings.library
    if not library.is_file():
        raise PackageError(f"tvm artifact library {library} is missing")
    vm = tvm.runtime.vm.VirtualMachine(tvm.runtime.load_module(str(library)), dev)
    return TvmArtifact(tvm, library, vm, dev, settings, outputs, threads)
