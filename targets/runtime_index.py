"""Backend name -> its runtime module (`targets/<backend>/runtime.py`), imported when chosen.

Standard library only (and the typed errors, themselves standard library): the serving runner, the emulated aarch64 worker and scripts import it
on hosts without pydantic, onnx or any runtime but the one they use. The build-side registry
of backends is targets/registry.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from compiler.core.errors import BackendUnavailable

if TYPE_CHECKING:
    from compiler.core.runtime import LoadedArtifact

__all__ = ["RUNTIMES", "RuntimeModule", "load_runtime"]

RUNTIMES: dict[str, str] = {
    "onnxruntime": "targets.onnxruntime.runtime",
    "openvino": "targets.openvino.runtime",
    "tvm": "targets.tvm.runtime",
    "tensorrt": "targets.tensorrt.runtime",
}


class RuntimeModule(Protocol):
    """What every runtime module has (its `settings` type is its backend's settings class)."""

    def load(
        self,
        artifact_dir: Path,
        settings: Any,
        outputs: Sequence[str],
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> LoadedArtifact: ...


def load_runtime(backend: str) -> RuntimeModule:
    """Import `backend`'s runtime module (its runtime library loads only when an artifact does)."""
    name = RUNTIMES.get(backend)
    if name is None:
        raise BackendUnavailable(
            backend, f"this compile-pkg has no runtime for it; known: {sorted(RUNTIMES)}"
        )
    return cast(RuntimeModule, importlib.import_module(name))
