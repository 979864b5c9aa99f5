"""`compile-pkg export --format mlflow`: an MLflow model (`MLmodel`, a tensor signature from the
contract, an input example from reference/) whose pyfunc `load_context` calls compile-pkg's
loader on the package it carries, so the artifact is picked at load time on the serving host.

The model is saved "from code" (MLflow 3): the pyfunc is a small source file, not a pickle,
and needs compile-pkg installed where it is served. The package inside is rebuilt from
hash-checked copies, and the loader checks it again at every load. MLflow (`pip install
mlflow-skinny`) is imported only here, when asked for.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract, TensorSpec
from compiler.core.errors import BackendUnavailable
from compiler.packaging.export.records import ExportResult, LeftOut
from compiler.packaging.export.source import VerifiedPackage
from compiler.packaging.write import write_atomically

__all__ = ["PYFUNC_CODE", "export_mlflow"]

PYFUNC_CODE = '''"""MLflow pyfunc written by `compile-pkg export --format mlflow`: loads the compile-pkg
package in artifacts/package with compile-pkg's loader, which picks the artifact that fits
this host (needs compile-pkg installed here)."""

import mlflow
from mlflow.pyfunc import PythonModel

from compiler.serving.loader import load


class CompilePkgModel(PythonModel):
    def load_context(self, context):
        self.session = load(context.artifacts["package"])

    def predict(self, context, model_input, params=None):
        return self.session.run(dict(model_input))


mlflow.models.set_model(CompilePkgModel())
'''


def _mlflow() -> Any:
    try:
        return importlib.import_module("mlflow")
    except ImportError:
        raise BackendUnavailable(
            "mlflow", "MLflow is not installed", "pip install mlflow-skinny"
        ) from None


def _tensor_spec(mlflow: Any, t: TensorSpec) -> Any:
    shape = tuple(d if isinstance(d, int) else -1 for d in t.shape)
    return mlflow.types.TensorSpec(np.dtype(t.dtype), shape, t.name)


def _signature(mlflow: Any, contract: Contract) -> Any:
    schema = mlflow.types.Schema
    return mlflow.models.ModelSignature(
        inputs=schema([_tensor_spec(mlflow, t) for t in contract.inputs]),
        outputs=schema([_tensor_spec(mlflow, t) for t in contract.outputs]),
    )


def _input_example(package: Path, contract: Contract) -> dict[str, np.ndarray]:
    """The first reference sample, by input name."""
    with np.load(package / "reference" / "inputs.npz") as z:
        first = sorted(z.files)[0].split(".", 1)[0]
        return {t.name: z[f"{first}.{t.name}"] for t in contract.inputs}


def _package_copy(vp: VerifiedPackage, dest: Path) -> None:
    """The package rebuilt from hash-checked copies of its files."""
    for a in vp.with_files:
        vp.copy_artifact(a, dest, keep_layout=True)
    vp.copy_reference(dest)
    for entry in vp.manifest.reports:
        (dest / entry.path).parent.mkdir(parents=True, exist_ok=True)
        (dest / entry.path).write_bytes(vp.read_member(entry.path, entry))
    for rel in vp.root_files():
        (dest / rel).write_bytes(vp.read_member(rel))


def export_mlflow(vp: VerifiedPackage, out: Path) -> ExportResult:
    """Save an MLflow model serving `vp` at `out` (replaced atomically)."""
    mlflow = _mlflow()
    carried = list(vp.with_files)
    result = ExportResult(
        format="mlflow",
        output=str(out),
        exported=["package"] * len(carried),
        artifacts=[a.id for a in carried],
        left_out=[
            LeftOut(id=s.id, reason=s.reason)
            for s in vp.skipped
            if not any(a.id == s.id for a in carried)
        ],
    )
    scratch = Path(tempfile.mkdtemp(prefix="compile-pkg-mlflow-"))
    try:
        code = scratch / "compile_pkg_pyfunc.py"
        code.write_text(PYFUNC_CODE, encoding="utf-8")
        package = scratch / "package"
        _package_copy(vp, package)
        contract = vp.manifest.contract

        def fill(staging: Path) -> None:
            mlflow.pyfunc.save_model(
                path=str(staging / "model"),
                python_model=str(code),
                artifacts={"package": str(package)},
                signature=_signature(mlflow, contract),
                input_example=_input_example(package, contract),
                pip_requirements=["compile-pkg"],
            )
            for child in (staging / "model").iterdir():
                child.rename(staging / child.name)
            (staging / "model").rmdir()

        write_atomically(out, fill)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result
