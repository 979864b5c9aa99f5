"""Load and run an OpenVINO artifact: compile the IR for the CPU in the artifact's inference
precision, and no other.

What the CPU plugin picks by itself varies (bf16 on AVX-512 Xeons, f16 on ARM), so the
artifact records one precision, `load` asks for exactly that and refuses when the plugin
compiled something else. Standard library, numpy and openvino only (imported when an
artifact loads), so the emulated aarch64 worker runs it as the serving runner does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import BackendUnavailable
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import OpenVinoSettings

__all__ = ["INSTALL", "OpenVinoArtifact", "compile_ir", "load", "openvino_message", "version"]

INSTALL = "pip install 'compile-pkg[openvino]'"
# line prefixes of OpenVINO messages that locate the C++ check, not the problem
_NOISE = ("Check '", "FrontEnd API failed with", "Summary:", "Exception from src/", "[ GENERAL")


def _ov() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable("openvino", f"cannot import openvino: {exc}", INSTALL) from exc
    return openvino


def version() -> str:
    """'2026.4.1' (without the build suffix) of the openvino this process imports."""
    return str(_ov().__version__).split("-")[0]


def openvino_message(exc: BaseException, limit: int = 400, lines: int = 4) -> str:
    """The lines of an OpenVINO message that say what failed, without its C++ check trail."""
    kept = []
    for line in str(exc).strip().splitlines():
        line = line.strip(" -\t")
        if line and not line.startswith(_NOISE) and not re.match(r"^\S+\.cpp:\d+", line):
            kept.append(line)
    msg = " ".join(kept[:lines]) or type(exc).__name__
    return msg[:limit] + ("..." if len(msg) > limit else "")


def compile_ir(model: Any, config: Mapping[str, Any]) -> Any:
    """Compile an IR file (a Path) or an `openvino.Model` for the CPU with `config`."""
    core = _ov().Core()
    if isinstance(model, Path):
        model = core.read_model(str(model))
    return core.compile_model(model, "CPU", dict(config))


def _config(settings: OpenVinoSettings, threads: int, cache_dir: Path | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": settings.inference_precision,
        "PERFORMANCE_HINT": settings.performance_hint,
        "ENABLE_CPU_PINNING": settings.cpu_pinning,
    }
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    if settings.num_streams:
        cfg["NUM_STREAMS"] = settings.num_streams
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cfg["CACHE_DIR"] = str(cache_dir)
    return cfg


class OpenVinoArtifact:
    """A compiled model and one infer request; `run` copies the outputs out of it."""

    def __init__(self, compiled: Any, outputs: Sequence[str]) -> None:
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._ports = {name: compiled.output(name) for name in outputs}

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self._request.infer(dict(feeds))
        return {name: np.array(result[port], copy=True) for name, port in self._ports.items()}

    def describe(self) -> RunnerInfo:
        c = self.compiled
        return {
            "runtime": f"openvino {version()}",
            "device": f"CPU ({', '.join(c.get_property('EXECUTION_DEVICES'))})",
            "precision": c.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": int(c.get_property("INFERENCE_NUM_THREADS")),
            "streams": int(c.get_property("NUM_STREAMS")),
            "performance_hint": str(c.get_property("PERFORMANCE_HINT")),
            "cpu_pinning": bool(c.get_property("ENABLE_CPU_PINNING")),
            "loaded_from_cache": bool(c.get_property("LOADED_FROM_CACHE")),
        }

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self._request = self.compiled = None


def load(
    artifact_dir: Path,
    settings: OpenVinoSettings,
    outputs: Sequence[str],
    *,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> OpenVinoArtifact:
    """Compile `settings.xml` for the CPU; `cache_dir` becomes OpenVINO's CACHE_DIR (compiled
    blobs reused by the next load); `threads` (if given) overrides the artifact's own."""
    xml = artifact_dir / settings.xml
    n = settings.num_threads if threads is None else threads
    try:
        compiled = compile_ir(xml, _config(settings, n, cache_dir))
    except BackendUnavailable:
        raise
    except Exception as exc:  # openvino raises plain RuntimeError subclasses
        raise BackendUnavailable(
            "openvino",
            f"cannot compile {xml}: {openvino_message(exc)}",
            what="cannot run this artifact on this CPU",
        ) from exc
    want = settings.inference_precision
    got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    if got != want:
        raise BackendUnavailable(
            "openvino",
            f"this CPU cannot run {artifact_dir.name} in {want}: OpenVINO compiled it as {got}; "
            "pick an artifact of another precision for this host",
        )
    return OpenVinoArtifact(compiled, outputs)
