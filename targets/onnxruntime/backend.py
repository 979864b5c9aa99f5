"""ONNX Runtime backend: `cpu` (x86-64) and `arm` (aarch64) artifacts.

The artifact is the pipeline's ONNX model plus the session options to load it with. The
model stays portable (only hardware-independent graph rewrites happen at build time);
hardware-specific optimization (`all`: layout transforms, NCHWc) is applied by ONNX Runtime
on the serving host at load time, where the host is known.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import BuildError, short_message
from compiler.core.host import Requirements
from compiler.core.settings import OnnxRuntimeSettings, RuntimeSettings, settings_to_json
from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult, Runner

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeOptions", "OnnxRuntimeRunner"]

_ARCH = {"cpu": "x86_64", "arm": "aarch64"}
_INSTALL = "pip install 'onnxruntime>=1.20'"


class OnnxRuntimeOptions(BackendOptions):
    backend: Literal["onnxruntime"] = "onnxruntime"
    # applied on the serving host when the session is created
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per physical core)
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    min_runtime_version: str = "1.20"


def _version() -> str:
    import onnxruntime as ort

    return ort.__version__


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    version = "1"
    targets = frozenset({"cpu", "arm"})
    options_cls = OnnxRuntimeOptions

    @classmethod
    def availability(cls, target: str) -> Availability:
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no onnxruntime artifact for target '{target}'")
        return cls.runtime_availability()

    @classmethod
    def runtime_availability(cls) -> Availability:
        try:
            _version()
        except ImportError as exc:
            return Availability(
                ok=False, reason=f"cannot import onnxruntime: {exc}", install=_INSTALL
            )
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return {"onnxruntime": _version()}

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, OnnxRuntimeOptions)
        files = []
        for src in sorted(model_path.parent.iterdir()):
            if src.is_file():
                shutil.copyfile(src, out_dir / src.name)
                files.append(src.name)
        # Load once here so a model ONNX Runtime cannot run fails its own build, not serving.
        try:
            _session(out_dir / model_path.name, opts.graph_optimization_level, 1, "sequential")
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BuildError(
                f"onnxruntime cannot load {model_path.name}: {short_message(exc, 400)}"
            ) from exc
        return BuildResult(
            files=files,
            runtime=OnnxRuntimeSettings(
                model=model_path.name,
                graph_optimization_level=opts.graph_optimization_level,
                intra_op_num_threads=opts.intra_op_num_threads,
                execution_mode=opts.execution_mode,
            ),
            requirements=Requirements(
                arch=_ARCH[request.target],
                runtime="onnxruntime",
                min_runtime_version=opts.min_runtime_version,
            ),
            precision=request.precision,
            portable=True,
        )

    @classmethod
    def runner(
        cls,
        artifact_dir: Path,
        runtime: RuntimeSettings,
        contract: Contract,
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> OnnxRuntimeRunner:
        assert isinstance(runtime, OnnxRuntimeSettings)
        plain = settings_to_json(runtime)
        return OnnxRuntimeRunner(artifact_dir / runtime.model, plain, contract, threads)


def _session(path: Path, level: str, threads: int, mode: str, log_level: int = 3) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.intra_op_num_threads = threads
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.log_severity_level = log_level
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OnnxRuntimeRunner(Runner):
    def __init__(
        self, model: Path, runtime: dict[str, Any], contract: Contract, threads: int | None
    ) -> None:
        super().__init__(contract)
        self.model = model
        self.runtime = runtime
        self.threads = runtime.get("intra_op_num_threads", 0) if threads is None else threads
        self.session: Any = None
        self.output_names: list[str] = [o.name for o in contract.outputs]

    def load(self) -> None:
        self.session = _session(
            self.model,
            self.runtime.get("graph_optimization_level", "all"),
            self.threads,
            self.runtime.get("execution_mode", "sequential"),
        )

    def close(self) -> None:
        self.session = None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def describe(self) -> dict[str, Any]:
        import os

        threads = self.threads or os.cpu_count() or 1
        return {
            "runtime": f"onnxruntime {_version()}",
            "device": "cpu",
            "threads": threads,
            "graph_optimization_level": self.runtime.get("graph_optimization_level", "all"),
        }


def reference_session(model_path: Path, threads: int = 0) -> Any:
    """The reference: the normalized fp32 model on ONNX Runtime CPU, default optimizations."""
    return _session(model_path, "all", threads, "sequential")
