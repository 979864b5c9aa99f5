"""Run one artifact the way serving and measurement do: a context manager whose `run` checks
feeds against the interface contract, then hands them to the artifact its backend's runtime
module loaded (targets/runtime_index.py), and returns the contract's outputs in its dtypes.

`open_runner(backend, artifact_dir, settings, contract)` is the one way the loader, verify and
the build's verify nodes run an artifact. `SwitchingRunner` serves a fallback while an artifact
waits for a background build (a TensorRT engine built from its deferred spec).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import CompilePkgError, PackageError
from compiler.core.runtime import LoadedArtifact, RunnerInfo
from compiler.core.settings import OnnxRuntimeSettings, RuntimeSettings
from targets.runtime_index import load_runtime

__all__ = ["BuildJob", "Runner", "SwitchingRunner", "open_runner", "reference_runner"]


class BuildJob(Protocol):
    """A background build an artifact waits for: `state` building | ready | failed."""

    state: str
    error: str


class Runner:
    """A loaded artifact behind the contract: `run` validates, `run_checked` does the work."""

    def __init__(self, contract: Contract, opener: Callable[[], LoadedArtifact], name: str) -> None:
        self.contract = contract
        self.name = name
        # set when load() failed because the artifact waits for a background build
        self.build_job: BuildJob | None = None
        self._opener = opener
        self._loaded: LoadedArtifact | None = None
        self._closed = False

    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> None:
        if self._loaded is not None:
            return
        try:
            self._loaded = self._opener()
        except Exception as exc:
            self.build_job = getattr(exc, "build_job", None)
            raise
        self._closed = False

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
        self._loaded = None
        self._closed = True

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self.run_checked(self.contract.validate_feeds(feeds))

    def run_checked(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run feeds already checked against the contract (what latency measurement times)."""
        if self._loaded is None:
            state = "was closed" if self._closed else "is not loaded (call load() first)"
            raise CompilePkgError(f"{self.name}: this runner {state}")
        outs = self._loaded.run(feeds)
        missing = [o.name for o in self.contract.outputs if o.name not in outs]
        if missing:
            raise PackageError(f"{self.name}: no output {missing}; it returned {sorted(outs)}")
        return {o.name: outs[o.name].astype(o.dtype, copy=False) for o in self.contract.outputs}

    def sync(self) -> None:
        if self._loaded is not None:
            self._loaded.sync()

    def describe(self) -> RunnerInfo:
        return self._loaded.describe() if self._loaded is not None else {}


class SwitchingRunner:
    """Serve `fallback` until `pending`'s background build is ready, then switch to it.

    `pending` is a runner whose `load()` raised while its `build_job` runs. If the build fails,
    or loading its result fails, the fallback keeps serving; `describe()` says which serves
    and why.
    """

    def __init__(self, fallback: Runner, pending: Runner) -> None:
        self.contract = fallback.contract
        self.fallback, self.pending = fallback, pending
        self.active = fallback
        self.note = "serving the fallback while the background build runs"

    def __enter__(self) -> SwitchingRunner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def build_job(self) -> BuildJob | None:
        return self.pending.build_job

    def load(self) -> None:
        self.fallback.load()

    def close(self) -> None:
        self.fallback.close()
        self.pending.close()

    def _maybe_switch(self) -> None:
        job = self.pending.build_job
        if self.active is self.pending or job is None or job.state == "building":
            return
        if job.state == "failed":
            self.note = f"background build failed, serving the fallback: {job.error}"
            return
        try:
            self.pending.load()
        except Exception as exc:  # noqa: BLE001 - keep serving the fallback
            self.note = f"background build finished but did not load, serving the fallback: {exc}"
            self.pending.build_job = None
            return
        self.active, self.note = (
            self.pending,
            f"switched to {self.pending.name}, built on this host",
        )

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self._maybe_switch()
        return self.active.run(feeds)

    def run_checked(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_switch()
        return self.active.run_checked(feeds)

    def sync(self) -> None:
        self.active.sync()

    def describe(self) -> RunnerInfo:
        return {**self.active.describe(), "switching": self.note}


def open_runner(
    backend: str,
    artifact_dir: Path,
    settings: RuntimeSettings,
    contract: Contract,
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> Runner:
    """A runner for one artifact (not yet loaded: `load()` or `with`). `threads` overrides the
    artifact's own thread count; `cache_dir` is where runtimes may keep compiled caches
    (OpenVINO CACHE_DIR, TensorRT engines)."""
    if settings.backend != backend:
        raise PackageError(
            f"{artifact_dir}: runtime settings are for {settings.backend}, the artifact says "
            f"{backend}; rebuild the package"
        )
    runtime = load_runtime(backend)
    outputs = [o.name for o in contract.outputs]

    def opener() -> LoadedArtifact:
        return runtime.load(artifact_dir, settings, outputs, threads=threads, cache_dir=cache_dir)

    return Runner(contract, opener, f"{backend} artifact {artifact_dir.name}")


def reference_runner(model_path: Path, contract: Contract, threads: int = 0) -> Runner:
    """The reference: the normalized fp32 model on ONNX Runtime CPU, default optimizations."""
    settings = OnnxRuntimeSettings(model=model_path.name, intra_op_num_threads=threads)
    return open_runner("onnxruntime", model_path.parent, settings, contract, threads=threads)
