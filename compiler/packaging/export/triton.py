"""`compile-pkg export --format triton`: a Triton model repository with one model per exported
artifact. ONNX Runtime artifacts become `onnxruntime_onnx` models, OpenVINO IR `openvino`
models; TVM libraries and TensorRT artifacts (whose engine the runtime builds for the serving
GPU) become `python` backend models whose model.py runs them through compile-pkg's runtime
module. Each model folder holds config.pbtxt (from the contract), compile_pkg.json (the
artifact's files with sha256, requirements, parity and latency records) and version 1.

Each model folder is written atomically (compiler/packaging/write.py) and only those folders
are touched: a repository may hold other models. Exported files come from hash-checked copies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compiler.core.settings import OnnxRuntimeSettings, OpenVinoSettings, RuntimeSettings
from compiler.packaging.export.records import EXPORT_RECORD, ExportResult, LeftOut
from compiler.packaging.export.source import VerifiedPackage
from compiler.packaging.export.triton_config import model_from_contract
from compiler.packaging.export.triton_python import MODEL_PY
from compiler.packaging.write import write_atomically
from compiler.serving.manifest import ArtifactEntry

__all__ = ["TRITON_BACKENDS", "TritonBackend", "export_triton", "model_name"]

VERSION = "1"


@dataclass(frozen=True)
class TritonBackend:
    """How one compile-pkg backend is served by Triton: a native platform/backend that opens
    the artifact's file, or the Python backend with model.py (`python_model`)."""

    platform: str = ""
    backend: str = ""
    python_model: bool = False
    parameters: Callable[[RuntimeSettings], dict[str, str]] = field(default=lambda _: {})


def _ort_parameters(s: RuntimeSettings) -> dict[str, str]:
    assert isinstance(s, OnnxRuntimeSettings)
    params = {"execution_mode": "1" if s.execution_mode == "parallel" else "0"}
    if s.intra_op_num_threads:
        params["intra_op_thread_count"] = str(s.intra_op_num_threads)
    return params


def _openvino_parameters(s: RuntimeSettings) -> dict[str, str]:
    assert isinstance(s, OpenVinoSettings)
    params: dict[str, str] = {"PERFORMANCE_HINT": s.performance_hint}
    if s.inference_precision == "bf16":
        params["HINT_BF16"] = "YES"
    if s.num_threads:
        params["INFERENCE_NUM_THREADS"] = str(s.num_threads)
    if s.num_streams:
        params["NUM_STREAMS"] = str(s.num_streams)
    return params


TRITON_BACKENDS: dict[str, TritonBackend] = {
    "onnxruntime": TritonBackend(platform="onnxruntime_onnx", parameters=_ort_parameters),
    "openvino": TritonBackend(backend="openvino", parameters=_openvino_parameters),
    "tvm": TritonBackend(backend="python", python_model=True),
    "tensorrt": TritonBackend(backend="python", python_model=True),
}


def model_name(package: str, a: ArtifactEntry) -> str:
    """`<package>-<target>-<variant>`, in the characters Triton model names allow."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{package or 'model'}-{a.target}-{a.variant}")


def _native_file(a: ArtifactEntry) -> str:
    """The file a native Triton backend opens (the artifact's runtime settings name it)."""
    s = a.runtime
    if isinstance(s, OnnxRuntimeSettings):
        return s.model
    if isinstance(s, OpenVinoSettings):
        return s.xml
    return ""


def _write_model(vp: VerifiedPackage, a: ArtifactEntry, spec: TritonBackend, folder: Path) -> None:
    assert a.runtime is not None and a.requirements is not None
    name = folder.name
    evidence = vp.evidence(a, name)
    config = model_from_contract(
        name,
        evidence.contract,
        "KIND_GPU" if a.requirements.gpu else "KIND_CPU",
        platform=spec.platform,
        backend=spec.backend,
        default_model_filename="" if spec.python_model else _native_file(a),
        parameters=spec.parameters(a.runtime),
    )

    def fill(staging: Path) -> None:
        version = staging / VERSION
        if spec.python_model:
            vp.copy_artifact(a, version, keep_layout=True)
            (version / "model.py").write_text(MODEL_PY, encoding="utf-8")
        else:
            vp.copy_artifact(a, version)
        (staging / "config.pbtxt").write_text(config.pbtxt(), encoding="utf-8")
        (staging / EXPORT_RECORD).write_text(
            evidence.model_dump_json(indent=2) + "\n", encoding="utf-8"
        )

    write_atomically(folder, fill)


def export_triton(vp: VerifiedPackage, repo: Path) -> ExportResult:
    """Write one Triton model per exportable artifact of `vp` into `repo`."""
    result = ExportResult(
        format="triton",
        output=str(repo),
        left_out=[LeftOut(id=s.id, reason=s.reason) for s in vp.skipped],
    )
    for a in vp.exportable:
        spec = TRITON_BACKENDS.get(a.backend)
        if spec is None:
            result.left_out.append(LeftOut(id=a.id, reason=f"no Triton mapping for {a.backend}"))
            continue
        name = model_name(vp.manifest.package.name, a)
        _write_model(vp, a, spec, repo / name)
        result.exported.append(name)
        result.artifacts.append(a.id)
    return result
