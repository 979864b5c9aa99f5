"""Load and run an ONNX Runtime artifact: the model plus the session options it was built with.

Standard library, numpy and onnxruntime only (imported when an artifact loads), so the
emulated aarch64 worker runs it as the serving runner does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import OnnxRuntimeSettings, OnnxRuntimeSpecialization

__all__ = ["INSTALL", "OnnxRuntimeArtifact", "load", "session", "version"]

INSTALL = "pip install 'onnxruntime>=1.20'"
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "onnxruntime", f"cannot import onnxruntime: {exc}", INSTALL
        ) from exc
    return onnxruntime


def version() -> str:
    """The version of the onnxruntime this process imports (BackendUnavailable without one)."""
    return str(_ort().__version__)


def session(
    path: Path,
    level: str = "all",
    threads: int = 0,
    mode: str = "sequential",
    providers: Sequence[str] = ("CPUExecutionProvider",),
    spinning: bool = True,
) -> Any:
    """An `onnxruntime.InferenceSession` with these options (threads 0: ONNX Runtime's default;
    `spinning` False: idle intra-op threads sleep instead of busy-waiting)."""
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[level])
    so.intra_op_num_threads = threads
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    if not spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=list(providers))


class _Guarded:
    """A specialization's session and the one-element values its call must feed."""

    def __init__(self, sess: Any, spec: OnnxRuntimeSpecialization) -> None:
        self.session = sess
        self.bound = tuple(zip(spec.inputs, spec.values, strict=True))
        self.names = frozenset(spec.inputs)

    def admits(self, feeds: Mapping[str, np.ndarray]) -> bool:
        for name, value in self.bound:
            fed = feeds.get(name)
            if fed is None or np.size(fed) != 1 or np.asarray(fed).reshape(-1)[0] != value:
                return False
        return True


class OnnxRuntimeArtifact:
    """One InferenceSession (`general`), or several: a call whose bound inputs hold a
    specialization's values runs that one (specialize.py); `run` returns the named outputs.
    `general` is a callable that opens the general session, called at the first call that
    needs it where specializations exist."""

    def __init__(
        self,
        general: Any,
        outputs: Sequence[str],
        info: RunnerInfo,
        special: Sequence[_Guarded] = (),
    ) -> None:
        self._open = general if special else None
        self._session = None if special else general
        self._special = list(special)
        self._outputs = list(outputs)
        self._info = info
        self.general_calls = 0  # calls no specialization admitted

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for guarded in self._special:
            if guarded.admits(feeds):
                rest = {k: v for k, v in feeds.items() if k not in guarded.names}
                outs = guarded.session.run(self._outputs, rest)
                return dict(zip(self._outputs, outs, strict=True))
        if self._session is None:
            assert self._open is not None
            self._session = self._open()
        if self._special:
            self.general_calls += 1
        outs = self._session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, outs, strict=True))

    def describe(self) -> RunnerInfo:
        return dict(self._info)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self._session = None
        self._special = []


def load(
    artifact_dir: Path,
    settings: OnnxRuntimeSettings,
    outputs: Sequence[str],
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> OnnxRuntimeArtifact:
    """A session on `settings.model`; `threads` (if given) overrides the artifact's own."""
    n = settings.intra_op_num_threads if threads is None else threads

    def open_model(name: str) -> Any:
        return session(
            artifact_dir / name,
            settings.graph_optimization_level,
            n,
            settings.execution_mode,
            settings.providers,
            settings.allow_spinning,
        )

    special = [_Guarded(open_model(s.model), s) for s in settings.specializations]
    info: RunnerInfo = {
        "runtime": f"onnxruntime {version()}",
        "device": "cpu",
        "threads": n or os.cpu_count() or 1,
        "graph_optimization_level": settings.graph_optimization_level,
        "execution_mode": settings.execution_mode,
        "allow_spinning": settings.allow_spinning,
    }
    if special:
        info["specialized"] = (
            "; ".join(", ".join(f"{i} == {v}" for i, v in g.bound) for g in special)
            + " (other values: the general graph, opened at its first call)"
        )
        return OnnxRuntimeArtifact(lambda: open_model(settings.model), outputs, info, special)
    return OnnxRuntimeArtifact(open_model(settings.model), outputs, info)
