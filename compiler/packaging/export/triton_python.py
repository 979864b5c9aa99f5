"""The `model.py` of a Triton Python-backend model that serves one compile-pkg artifact (TVM
libraries; TensorRT, whose engine the runtime module builds for the serving GPU on first load).
It runs in Triton's Python environment with compile-pkg installed, checks the artifact's files
against their sha256 while copying them privately, and runs them through the project's runner
(the same runtime module `compiler.serving.loader.load` uses)."""

from __future__ import annotations

__all__ = ["MODEL_PY"]

MODEL_PY = '''"""Triton Python-backend model written by `compile-pkg export --format triton`.

Serves the compile-pkg artifact under this version folder (artifacts/...) through compile-pkg's
runtime module; compile_pkg.json beside config.pbtxt holds its entry (files with sha256,
requirements, runtime settings), interface and parity/latency record. Needs compile-pkg (and
the artifact's runtime) installed in Triton's Python environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from compiler.core.contract import Contract
from compiler.serving.integrity import VerifiedCopy
from compiler.serving.manifest import ArtifactEntry
from targets.runner import Runner, open_runner

RECORD = "compile_pkg.json"


def open_artifact(model_dir: Path, version: str = "1") -> tuple[VerifiedCopy, Runner]:
    """The artifact's files checked against their sha256 into a private copy, and its loaded
    runner; IntegrityError when a file was changed after export."""
    record = json.loads((model_dir / RECORD).read_text(encoding="utf-8"))
    artifact = ArtifactEntry.model_validate(record["artifact"])
    contract = Contract.model_validate(record["contract"])
    if artifact.runtime is None:
        raise ValueError(f"{model_dir}: {artifact.id} has no runtime settings")
    copy = VerifiedCopy(model_dir / version, artifact)
    try:
        runner = open_runner(artifact.backend, copy.artifact_dir, artifact.runtime, contract)
        runner.load()
    except BaseException:
        copy.close()
        raise
    return copy, runner


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        self.copy, self.runner = open_artifact(Path(args["model_repository"]), args["model_version"])

    def execute(self, requests: list[object]) -> list[object]:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            feeds = {
                t.name: pb_utils.get_input_tensor_by_name(request, t.name).as_numpy()
                for t in self.runner.contract.inputs
            }
            try:
                outs = self.runner.run(feeds)
            except Exception as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
                continue
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(v)) for name, v in outs.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.runner.close()
        self.copy.close()
'''
