"""Device buffers, a stream and event timing for the TensorRT runner.

Two implementations of one small interface: cuda-python (`cuda.bindings.runtime`, as
NVIDIA's TensorRT samples use) and, when that is absent, torch CUDA tensors. Both are
imported lazily; `open_device()` picks the first available.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable

__all__ = ["Device", "open_device"]

_INSTALL = "pip install cuda-python (or a CUDA build of torch)"


class Device(ABC):
    """Grow-only device buffers by name, async copies on one stream, event timing."""

    kind: str

    def __init__(self) -> None:
        self._buffers: dict[str, tuple[Any, int]] = {}

    def buffer(self, name: str, nbytes: int) -> int:
        """Device pointer of a buffer of at least `nbytes` (reallocated only when larger)."""
        held = self._buffers.get(name)
        if held is None or held[1] < nbytes:
            if held is not None:
                self._free(held[0])
            self._buffers[name] = (self._alloc(max(nbytes, 1)), max(nbytes, 1))
        return self._ptr(self._buffers[name][0])

    def close(self) -> None:
        for handle, _ in self._buffers.values():
            self._free(handle)
        self._buffers.clear()

    @property
    @abstractmethod
    def stream(self) -> int: ...

    @abstractmethod
    def _alloc(self, nbytes: int) -> Any: ...

    @abstractmethod
    def _free(self, handle: Any) -> None: ...

    @abstractmethod
    def _ptr(self, handle: Any) -> int: ...

    @abstractmethod
    def to_device(self, ptr: int, host: np.ndarray) -> None: ...

    @abstractmethod
    def to_host(self, host: np.ndarray, ptr: int) -> None: ...

    @abstractmethod
    def synchronize(self) -> None: ...

    @abstractmethod
    def timed(self, fn: Callable[[], None]) -> float:
        """Run `fn` (which enqueues on the stream) between two events; GPU milliseconds."""


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {int(err)} ({err})")
    return rest[0] if len(rest) == 1 else rest


class _CudaPython(Device):
    kind = "cuda-python"

    def __init__(self, cudart: Any) -> None:
        super().__init__()
        self.rt = cudart
        self._stream = _check(cudart.cudaStreamCreate())

    @property
    def stream(self) -> int:
        return int(self._stream)

    def _alloc(self, nbytes: int) -> Any:
        return _check(self.rt.cudaMalloc(nbytes))

    def _free(self, handle: Any) -> None:
        _check(self.rt.cudaFree(handle))

    def _ptr(self, handle: Any) -> int:
        return int(handle)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._stream))

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._stream))

    def synchronize(self) -> None:
        _check(self.rt.cudaStreamSynchronize(self._stream))

    def timed(self, fn: Callable[[], None]) -> float:
        start, end = _check(self.rt.cudaEventCreate()), _check(self.rt.cudaEventCreate())
        try:
            _check(self.rt.cudaEventRecord(start, self._stream))
            fn()
            _check(self.rt.cudaEventRecord(end, self._stream))
            _check(self.rt.cudaEventSynchronize(end))
            return float(_check(self.rt.cudaEventElapsedTime(start, end)))
        finally:
            self.rt.cudaEventDestroy(start)
            self.rt.cudaEventDestroy(end)

    def close(self) -> None:
        super().close()
        if self._stream is not None:
            self.rt.cudaStreamDestroy(self._stream)
            self._stream = None


class _Torch(Device):
    kind = "torch"

    def __init__(self, torch: Any) -> None:
        super().__init__()
        self.torch = torch
        self._stream = torch.cuda.Stream()

    @property
    def stream(self) -> int:
        return int(self._stream.cuda_stream)

    def _alloc(self, nbytes: int) -> Any:
        return self.torch.empty(nbytes, dtype=self.torch.uint8, device="cuda")

    def _free(self, handle: Any) -> None:
        del handle

    def _ptr(self, handle: Any) -> int:
        return int(handle.data_ptr())

    def _view(self, ptr: int, nbytes: int) -> Any:
        for handle, _ in self._buffers.values():
            if int(handle.data_ptr()) == ptr:
                return handle[:nbytes]
        raise RuntimeError("pointer is not a buffer of this device")

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(host).reshape(-1).view(np.uint8))
        with self.torch.cuda.stream(self._stream):
            self._view(ptr, host.nbytes).copy_(src)

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        with self.torch.cuda.stream(self._stream):
            data = self._view(ptr, host.nbytes).cpu()
        host.reshape(-1).view(np.uint8)[:] = data.numpy()

    def synchronize(self) -> None:
        self._stream.synchronize()

    def timed(self, fn: Callable[[], None]) -> float:
        start = self.torch.cuda.Event(enable_timing=True)
        end = self.torch.cuda.Event(enable_timing=True)
        start.record(self._stream)
        fn()
        end.record(self._stream)
        end.synchronize()
        return float(start.elapsed_time(end))


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python < 12.6

        return cudart
    except ImportError:
        return None


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def open_device() -> Device:
    """cuda-python if importable, else torch with CUDA; BackendUnavailable otherwise."""
    cudart = _cudart()
    if cudart is not None:
        return _CudaPython(cudart)
    torch = _torch_cuda()
    if torch is not None:
        return _Torch(torch)
    raise BackendUnavailable(
        "tensorrt", "no CUDA buffer library (cuda-python, torch+CUDA)", _INSTALL
    )
