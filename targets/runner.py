"""Run one artifact the way serving and measurement do: a context manager whose `run` checks
feeds against the interface contract, then hands them to the backend's loaded artifact.

`open_runner(backend, artifact_dir, settings, contract)` is the one way the loader, verify and
the build's verify nodes run an artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import CompilePkgError
from compiler.core.runtime import LoadedArtifact, RunnerInfo
from compiler.core.settings import OnnxRuntimeSettings, RuntimeSettings

__all__ = ["Runner", "open_runner", "reference_runner"]


class Runner:
    """A loaded artifact behind the contract: `run` validates, `run_checked` does the work."""

    def __init__(self, contract: Contract, opener: Callable[[], LoadedArtifact], name: str) -> None:
        self.contract = contract
        self.name = name
        self._opener = opener
        self._loaded: LoadedArtifact | None = None
        self._closed = False

    def __enter__(self) -> Runner:
        self.load()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> None:
        if self._loaded is None:
            self._loaded = self._opener()
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
        return self._loaded.run(feeds)

    # the base Runner of targets/base.py names it so; TensorRT's SwitchingRunner calls it
    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_checked(feeds)

    def sync(self) -> None:
        if self._loaded is not None:
            self._loaded.sync()

    def describe(self) -> RunnerInfo:
        return self._loaded.describe() if self._loaded is not None else {}

    @property
    def build_job(self) -> Any:
        """A TensorRT engine building in the background for this artifact, if any."""
        return getattr(self._loaded or self._pending, "build_job", None)

    _pending: Any = None


class _Legacy:
    """Adapter from a backend's own runner class to LoadedArtifact (until each backend has
    its runtime module)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.build_job = getattr(runner, "build_job", None)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner._run(dict(feeds))  # type: ignore[no-any-return]

    def describe(self) -> RunnerInfo:
        return self.runner.describe()  # type: ignore[no-any-return]

    def sync(self) -> None:
        if hasattr(self.runner, "sync"):
            self.runner.sync()

    def close(self) -> None:
        self.runner.close()


def open_runner(
    backend: str,
    artifact_dir: Path,
    settings: RuntimeSettings,
    contract: Contract,
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> Runner:
    """A runner for one artifact (not yet loaded: `load()` or `with`)."""
    from targets.registry import get_backend

    legacy = get_backend(backend).runner(
        artifact_dir, settings, contract, threads=threads, cache_dir=cache_dir
    )
    runner = Runner(
        contract, lambda: _open_legacy(legacy, runner), f"{backend} artifact {artifact_dir.name}"
    )
    return runner


def _open_legacy(legacy: Any, runner: Runner) -> LoadedArtifact:
    try:
        legacy.load()
    except Exception:
        runner._pending = legacy  # a TensorRT build may have started: the loader looks
        raise
    return _Legacy(legacy)


def reference_runner(model_path: Path, contract: Contract, threads: int = 0) -> Runner:
    """The reference: the normalized fp32 model on ONNX Runtime CPU, default optimizations."""
    settings = OnnxRuntimeSettings(model=model_path.name, intra_op_num_threads=threads)
    return open_runner("onnxruntime", model_path.parent, settings, contract, threads=threads)
