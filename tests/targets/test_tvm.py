"""TVM backend, build side: options, availability, preflight of unsupported ops, and what the
cpu (x86-64), arm (aarch64) and gpu (CUDA fatbin: SASS per arch, no CUDA source) builds make.

The artifacts are built once per session (tests/targets/conftest.py); running them is
test_tvm_runtime.py, real models and tuning test_tvm_slow.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from pydantic import ValidationError

from compiler.core.errors import BuildError, ContractError, NotApplicable
from compiler.core.settings import TensorShape
from targets.runner import open_runner
from targets.tvm._worker import _check_library
from targets.tvm.backend import TvmBackend, TvmOptions
from targets.tvm.cuda import cuda_source_markers, fatbin_entries
from targets.tvm.preflight import topological_order, unsupported_ops
from tests.targets.builders import lstm_net, reference, resize_net, save
from tests.targets.conftest import Built, build_tvm

REPO = Path(__file__).resolve().parents[2]
HAVE_TVM = TvmBackend.availability("cpu").ok
needs_tvm = pytest.mark.skipif(not HAVE_TVM, reason="apache-tvm is not installed")


# ---------------------------------------------------------------- options, availability


def test_options_reject_native_mcpu_and_bad_archs() -> None:
    with pytest.raises(ValidationError, match="llvm_get_system_cpu"):
        TvmOptions(mcpu="native")
    with pytest.raises(ValidationError, match="sm_NN with NN >= 75"):
        TvmOptions(cuda_archs=("sm_61",))
    with pytest.raises(ValidationError, match="cuda_archs is empty"):
        TvmOptions(cuda_archs=())
    assert TvmOptions(cuda_archs=("sm_90", "sm_80", "sm_90")).cuda_archs == ("sm_80", "sm_90")


def test_registry_without_tvm_reports_unavailable() -> None:
    code = (
        "import sys; sys.modules['tvm'] = None\n"
        "from targets.registry import BACKENDS\n"
        "a = BACKENDS['tvm'].availability('cpu')\n"
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
def test_lstm_is_not_applicable_with_unsupported_ops(tmp_path: Path) -> None:
    """An op TVM's frontend cannot import makes the artifact not applicable (skipped with
    the reason), not failed: nothing broke."""
    path = save(lstm_net(), tmp_path / "src")
    with pytest.raises(NotApplicable, match=r"unsupported ops: LSTM \(node 'lstm_1'\)") as info:
        build_tvm(path, "cpu", tmp_path)
    assert "onnxruntime or openvino" in str(info.value)
    assert not (tmp_path / "cpu-fp32-out" / "model.so").exists()


def _qdq_matmul(weight_type: int) -> onnx.ModelProto:
    """x -> MatMul with a DequantizeLinear weight of `weight_type` (INT8, INT4): an
    already-quantized QDQ model, opset 21."""
    w = np.array([[1, -2, 3, -4]] * 8, np.int8)
    weight = helper.make_tensor("wq", weight_type, [8, 4], w.ravel().tolist())
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "s"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
        [weight, onnx.numpy_helper.from_array(np.array(0.05, np.float32), "s")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@needs_tvm
def test_already_quantized_and_4_bit_sources_are_not_applicable(tmp_path: Path) -> None:
    """An already-quantized source makes its tvm variants int8, which tvm does not build,
    and TVM's importer cannot read 4-bit weights ("TensorCopyFromBytes: size mismatch"):
    both were failed artifacts; neither is a failure of the build."""
    int8 = save(_qdq_matmul(onnx.TensorProto.INT8), tmp_path / "int8")
    with pytest.raises(NotApplicable, match=r"already quantized \(int8\)"):
        build_tvm(int8, "cpu", tmp_path / "a", "int8")
    int4 = save(_qdq_matmul(onnx.TensorProto.INT4), tmp_path / "int4")
    with pytest.raises(NotApplicable, match=r"types TVM cannot read: INT4 \('wq'\)"):
        build_tvm(int4, "cpu", tmp_path / "b")


@needs_tvm
def test_a_form_the_frontend_does_not_implement_is_not_applicable(tmp_path: Path) -> None:
    """ONNX Runtime's own SkipLayerNormalization without its optional beta and bias (what
    ONNX Runtime's transformer optimizer writes; a model optimized by it given as the
    source): TVM's frontend asserts it "currently only supports required beta and bias".
    The artifact is skipped with that reason, not failed."""
    f = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node(
                "SkipLayerNormalization", ["x", "skip", "gamma"], ["y"], domain="com.microsoft"
            )
        ],
        "skipln",
        [
            helper.make_tensor_value_info("x", f, ["N", 4, 8]),
            helper.make_tensor_value_info("skip", f, ["N", 4, 8]),
        ],
        [helper.make_tensor_value_info("y", f, ["N", 4, 8])],
        [onnx.numpy_helper.from_array(np.ones(8, np.float32), "gamma")],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    path = save(helper.make_model(graph, opset_imports=opsets), tmp_path / "src")
    with pytest.raises(NotApplicable, match="frontend cannot import the model: .*beta and bias"):
        build_tvm(path, "cpu", tmp_path)


def _tvm_llvm(path: Path, x: np.ndarray) -> np.ndarray:
    """`path` imported by TVM's Relax frontend as it is and run on the CPU (llvm)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(path), shape_dict={"x": list(x.shape)})
    mod = relax.transform.LegalizeOps()(relax.transform.DecomposeOpsForInference()(mod))
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return np.asarray(vm["main"](tvm.runtime.tensor(x)).numpy())


@needs_tvm
def test_an_antialiased_downsample_is_not_applicable(tmp_path: Path) -> None:
    """TVM's frontend ignores Resize's antialias (opset 18): the gpu artifacts of a torch
    `interpolate(..., antialias=True)` export built, unverified with no GPU here, and would
    have failed parity where served. They are skipped, naming the node; an antialiased
    resize that only enlarges is the same without it, and builds."""
    x = np.random.default_rng(3).normal(size=(1, 3, 32, 32)).astype(np.float32)
    shrink = save(resize_net([1, 1, 0.5, 0.5]), tmp_path / "shrink")
    # why: TVM's own import computes something else (if this starts to pass, TVM reads
    # antialias now and the check can go)
    assert np.abs(_tvm_llvm(shrink, x) - reference(shrink, [{"x": x}])[0]["y"]).max() > 0.05
    with pytest.raises(NotApplicable, match=r"ignores Resize's antialias.*\['shrink'\]"):
        build_tvm(shrink, "cpu", tmp_path / "a")
    grow = save(resize_net([1, 1, 2, 2]), tmp_path / "grow")
    out, result, _, _ = build_tvm(grow, "cpu", tmp_path / "b")
    assert result.files and all((out / f).is_file() for f in result.files)


@needs_tvm
def test_a_resize_by_scales_off_whole_sizes_is_not_applicable(tmp_path: Path) -> None:
    """TVM maps a Resize through output size / input size, not the scales ONNX gives: a
    linear 0.55 x 0.8 downsample of 32 x 32 (17.6 x 25.6 rows) is computed elsewhere, with
    no error. Skipped, naming the node; scales that land on whole sizes build."""
    x = np.random.default_rng(5).normal(size=(1, 3, 32, 32)).astype(np.float32)
    odd = save(resize_net([1, 1, 0.55, 0.8], 0, "linear"), tmp_path / "odd")
    assert np.abs(_tvm_llvm(odd, x) - reference(odd, [{"x": x}])[0]["y"]).max() > 0.05  # why
    with pytest.raises(NotApplicable, match=r"maps Resize \['shrink'\] through output size"):
        build_tvm(odd, "cpu", tmp_path / "a")
    whole = save(resize_net([1, 1, 0.5, 0.75], 0, "linear"), tmp_path / "whole")
    assert np.abs(_tvm_llvm(whole, x) - reference(whole, [{"x": x}])[0]["y"]).max() < 1e-5
    out, result, _, _ = build_tvm(whole, "cpu", tmp_path / "b")
    assert result.files and all((out / f).is_file() for f in result.files)


@needs_tvm
def test_preflight_finds_ops_inside_subgraphs() -> None:
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


def test_preflight_tells_onnx_attention_from_onnx_runtime_s() -> None:
    """TVM converts com.microsoft's Attention; ONNX's own (opset 23, the dynamo exporter's
    scaled_dot_product_attention) failed inside that converter (KeyError 'num_heads')."""

    def attention(domain: str) -> onnx.ModelProto:
        node = helper.make_node("Attention", ["q", "k", "v"], ["y"], name="sdpa", domain=domain)
        f = onnx.TensorProto.FLOAT
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info(n, f, [1, 4, 8]) for n in "qkv"],
            [helper.make_tensor_value_info("y", f, [1, 4, 8])],
        )
        return helper.make_model(graph)

    assert unsupported_ops(attention("")) == {"Attention": "sdpa"}
    assert "Attention" not in unsupported_ops(attention("com.microsoft"))


# ---------------------------------------------------------------- cpu (x86-64)


def test_cpu_artifact_record(tvm_cpu_fp32: Built) -> None:
    out, result, _, _ = tvm_cpu_fp32
    assert result.files == ["model.so"] and sorted(p.name for p in out.iterdir()) == ["model.so"]
    rt = result.runtime
    assert rt.backend == "tvm" and rt.device == "cpu" and rt.entry == "main"
    assert rt.shapes == "dynamic"
    assert rt.inputs == (TensorShape("x", "float32", ("N", 3, 16, 16)),)
    assert rt.outputs == (TensorShape("y", "float32", ("N", 5)),)
    assert rt.target == {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "x86-64"}
    req = result.requirements
    assert (req.arch, req.isa, req.gpu, req.runtime) == ("x86_64", [], False, "tvm")
    assert result.portable is False and result.precision == "fp32"
    assert (out / "model.so").read_bytes()[18] == 62  # ELF e_machine x86-64


@needs_tvm
def test_cpu_fp16_static_parity_and_shape_guard(tvm_root: Path, clip_model: Path) -> None:
    # The fp16 variant takes the fp16 pass's output: ONNX Runtime's float16 converter.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16 = convert_float_to_float16(onnx.load(str(clip_model)), keep_io_types=True)
    fp16_path = save(fp16, tvm_root / "src16")
    out, result, contract, _ = build_tvm(fp16_path, "cpu", tvm_root, "fp16", shapes="static")
    assert result.runtime.shapes == "static" and result.precision == "fp16"
    assert result.runtime.inputs[0].shape == (1, 3, 16, 16)  # the contract's opt batch
    x = np.random.default_rng(11).normal(0, 1, (1, 3, 16, 16)).astype(np.float32)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"x": x})["y"]
        with pytest.raises(ContractError, match=r"built for \[1, 3, 16, 16\]; rebuild"):
            runner.run({"x": np.zeros((2, 3, 16, 16), np.float32)})
    ref = reference(clip_model, [{"x": x}])[0]["y"]
    assert got.dtype == np.float32  # fp16 inside, fp32 interface
    np.testing.assert_allclose(got, ref, atol=5e-3)
    assert not np.array_equal(got, ref)  # it really computed in fp16


@needs_tvm
def test_fp16_convolutions_sum_in_float32(tmp_path: Path) -> None:
    """A 1x1 convolution over 4096 fp16 channels of 0.125 each: 512. Summed in fp16, every
    partial sum from 256 on rounds the next 0.125 away (a tie, to even) and TVM's CPU code
    returned 256; summed in float32 and cast once, 512."""
    k = 4096
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["x16"], to=onnx.TensorProto.FLOAT16),
            helper.make_node("Conv", ["x16", "w"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["y"], to=onnx.TensorProto.FLOAT),
        ],
        "wide_sum",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", k, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1, 4, 4])],
        [onnx.numpy_helper.from_array(np.full((1, k, 1, 1), 0.125, np.float16), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src = save(model, tmp_path / "src")
    out, result, contract, _ = build_tvm(src, "cpu", tmp_path, "fp16", shapes="static")
    assert "fp16 convolutions and matrix products sum in float32" in result.notes
    x = np.ones((1, k, 4, 4), np.float32)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"x": x})["y"]
    # exact on any CPU: 4096 sums of 0.125 are exact in float32 in any order (ONNX Runtime is
    # not asked: whether its fp16 Conv sums wide depends on the host's kernels)
    np.testing.assert_array_equal(got, np.full((1, 1, 4, 4), 512.0, np.float32))


# ---------------------------------------------------------------- arm (aarch64)


def test_arm_library_is_aarch64(tvm_arm_fp32: Built) -> None:
    out, result, _, _ = tvm_arm_fp32
    data = (out / "model.so").read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183
    if shutil.which("file"):
        desc = subprocess.run(
            ["file", "-b", str(out / "model.so")], capture_output=True, text=True
        ).stdout
        assert "ARM aarch64" in desc and "shared object" in desc, desc
    assert result.requirements.arch == "aarch64" and "asimd" in result.requirements.isa
    assert result.runtime.target["mattr"] == ["+neon"]
    assert result.portable is False


# ---------------------------------------------------------------- gpu (CUDA fatbin)


def test_gpu_library_has_sass_per_arch_and_no_source(tvm_gpu_fp32: Built) -> None:
    out, result, _, _ = tvm_gpu_fp32
    data = (out / "model.so").read_bytes()
    assert cuda_source_markers(data) == []
    assert sorted({e.sm for e in fatbin_entries(data) if e.kind == "elf"}) == [80, 90]
    req = result.requirements
    assert req.gpu and req.gpu_compute_capabilities == ["8.0", "9.0"]
    assert result.runtime.device == "cuda" and result.runtime.cuda_archs == ("sm_80", "sm_90")
    # the libcuda.so.1 stand-in never reaches the artifact
    assert sorted(p.name for p in out.iterdir()) == ["model.so"]
    assert b"libcuda-standin" not in data and b"libcuda_standin" not in data
    if shutil.which("readelf"):
        dyn = subprocess.run(
            ["readelf", "-d", str(out / "model.so")], capture_output=True, text=True
        )
        assert "libcuda.so" not in dyn.stdout


def _tf2onnx_names() -> onnx.ModelProto:
    """A dense layer named as tf2onnx names it: '/' and ':' in the input, a dim 'unk__12:0'."""
    w = np.random.default_rng(3).normal(0, 1, (8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["serving_default/input_1:0", "dense/kernel:0"], ["y:0"])],
        "tf2onnx",
        [helper.make_tensor_value_info("serving_default/input_1:0", 1, ["unk__12:0", 8])],
        [helper.make_tensor_value_info("y:0", 1, ["unk__12:0", 4])],
        [onnx.numpy_helper.from_array(w, "dense/kernel:0")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_input_and_dim_names_that_are_not_c_identifiers_compile(tmp_path: Path) -> None:
    """TVM writes input and shape-variable names into the CUDA source it compiles: a tf2onnx
    input 'serving_default/input_1:0' made nvcc fail ("expected an expression") and the gpu
    artifacts with it. The names are made C identifiers for TVM; the artifact keeps the
    contract's names and takes its inputs in their order."""
    path = save(_tf2onnx_names(), tmp_path / "src")
    gpu = TvmBackend.availability("gpu")
    if gpu.ok:
        with pytest.MonkeyPatch.context() as mp:  # the libcuda.so.1 stand-in: out of ~/.cache
            mp.setenv("COMPILE_PKG_CACHE", str(tmp_path / "cache"))
            _, result, _, _ = build_tvm(path, "gpu", tmp_path, cuda_archs=("sm_80",))
        assert result.runtime.inputs[0].name == "serving_default/input_1:0"
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    x = np.random.default_rng(4).normal(0, 1, (3, 8)).astype(np.float32)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"serving_default/input_1:0": x})["y:0"]
    ref = reference(path, [{"serving_default/input_1:0": x}])[0]["y:0"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_source_only_cuda_library_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "model.so"
    header = b"\x7fELF" + bytes(14) + (62).to_bytes(2, "little")
    fake.write_bytes(header + b'\0extern "C" __global__ void __launch_bounds__(256) k()')
    with pytest.raises(BuildError, match="holds CUDA source"):
        _check_library(fake, "x86_64", "gpu", {"cuda_archs": ["sm_80"]})


def test_a_library_built_for_fixed_shapes_gets_its_own_contract() -> None:
    """A static build pins the symbolic dims it fixed; serving checks inputs against that."""
    from compiler.core.contract import Contract, DimRange, TensorSpec
    from compiler.core.settings import TensorShape, TvmSettings
    from targets.tvm.backend import fixed_shape_contract

    contract = Contract(
        inputs=[TensorSpec(name="x", dtype="float32", shape=["batch", 3, "h", "h"])],
        outputs=[TensorSpec(name="y", dtype="float32", shape=["batch", 4])],
        dims={"batch": DimRange(min=1, opt=2, max=8), "h": DimRange(min=32, opt=64, max=128)},
    )
    static = TvmSettings(
        library="lib.so",
        device="cpu",
        inputs=(TensorShape("x", "float32", (2, 3, 64, 64)),),
        outputs=(TensorShape("y", "float32", (2, 4)),),
    )
    own = fixed_shape_contract(contract, static)
    assert own is not None
    assert own.dims["batch"] == DimRange(min=2, opt=2, max=2)
    assert own.dims["h"] == DimRange(min=64, opt=64, max=64)
    dynamic = TvmSettings(
        library="lib.so",
        device="cpu",
        inputs=(TensorShape("x", "float32", ("batch", 3, "h", "h")),),
        outputs=(TensorShape("y", "float32", ("batch", 4)),),
        shapes="dynamic",
    )
    assert fixed_shape_contract(contract, dynamic) is None


@needs_tvm
def test_cheap_outer_frames_keep_what_tvmscript_reads() -> None:
    """Inside the build's `_cheap_outer_frames`, `inspect.stack()` lists the same frames
    with the same file, line and function, source context for the innermost ones only; a
    TVMScript function that reads a closure variable parses to the same script; `inspect`
    is itself again afterwards."""
    import inspect

    from tvm.script import tirx as T

    from targets.tvm._worker import _FULL_FRAMES, _cheap_outer_frames

    def parse() -> str:
        n = 16  # a closure variable the parser finds through the outer frames' locals

        @T.prim_func
        def double(a: T.Buffer((n,), "float32"), b: T.Buffer((n,), "float32")) -> None:
            for i in range(n):
                b[i] = a[i] * T.float32(2)

        return double.script()

    full = inspect.stack()
    with _cheap_outer_frames():
        cheap = inspect.stack()
        parsed_cheap = parse()
    assert inspect.getouterframes.__module__ == "inspect"
    assert [(f.frame, f.filename, f.lineno, f.function) for f in cheap[1:]] == [
        (f.frame, f.filename, f.lineno, f.function) for f in full[1:]
    ]
    assert all(f.code_context for f in cheap[:_FULL_FRAMES] if not f.filename.startswith("<"))
    assert all(f.code_context is None for f in cheap[_FULL_FRAMES:])
    assert parsed_cheap == parse() and "16" in parsed_cheap


def test_a_resize_given_empty_scales_beside_its_sizes_builds(tmp_path: Path) -> None:
    """tf2onnx writes Resize with an empty roi and scales beside its sizes (and opset 10-12
    models converted up carry them): TVM's frontend took the empty scales for given and
    refused the node ("Only one of scales and sizes can be provided"), failing every TVM
    artifact of such a model. They are left out, as ONNX defines them, and the artifact
    computes what ONNX Runtime does."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    empty = np.zeros(0, np.float32)
    inits = [
        onnx.numpy_helper.from_array(empty, "roi"),
        onnx.numpy_helper.from_array(empty, "scales"),
        onnx.numpy_helper.from_array(np.array([1, 1, 7, 9], np.int64), "sizes"),
    ]
    node = helper.make_node("Resize", ["x", "roi", "scales", "sizes"], ["y"], mode="linear")
    graph = helper.make_graph(
        [node],
        "tf2onnx_resize",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1, 7, 9])],
        inits,
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    x = np.random.default_rng(5).normal(0, 1, (1, 1, 4, 4)).astype(np.float32)
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"x": x})["y"]
    np.testing.assert_allclose(got, reference(path, [{"x": x}])[0]["y"], rtol=1e-5, atol=1e-5)


def test_an_integer_exponent_and_unread_pool_indices_build(tmp_path: Path) -> None:
    """A Pow of a float to an integer exponent and a MaxPool that names an Indices output
    nothing reads are valid ONNX that TVM's frontend refused ("Binary operators must have the
    same datatype", "Missing outputs during conversion"), failing every TVM artifact of such
    a model: the exponent is cast to the base's type and the unread output left out for the
    import, and the artifact computes what ONNX Runtime does."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "unread"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Pow", ["p", "two"], ["sq"]),
        helper.make_node("Pow", ["sq", "half"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "int_exponent",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 3, 3])],
        [
            onnx.numpy_helper.from_array(np.array(2, np.int64), "two"),
            onnx.numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    x = np.random.default_rng(6).normal(0, 1, (1, 2, 6, 6)).astype(np.float32)
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"x": x})["y"]
    want = reference(path, [{"x": x}])[0]["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(want).max() > 0.1  # |max pool| itself: not a vacuous comparison


def test_pool_indices_a_model_reads_still_say_tvm_cannot(tmp_path: Path) -> None:
    """Indices the model reads (a MaxUnpool's) are kept: TVM computes none, and the artifact
    is not applicable with TVM's reason, never built without them."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph(
        [node],
        "read_indices",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 6, 6])],
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 3, 3]),
            helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [1, 2, 3, 3]),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    with pytest.raises(NotApplicable, match="Missing outputs during conversion"):
        build_tvm(path, "cpu", tmp_path)


def test_shape_arithmetic_and_a_returned_shape_build_dynamic(tmp_path: Path) -> None:
    """A symbolic model that computes with a shape (Shape -> Mul: sizes from the batch) and
    returns one: TVM's frontend takes a shape in a few ops only ("cannot handle ShapeExpr
    inputs": the build fell back to static shapes), and a returned shape failed the build.
    Cast to int64 on the way, the artifact is dynamic (its Reshape still reads the shape)
    and computes what ONNX Runtime does at two batch sizes."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["rows"]),
        helper.make_node("Concat", ["rows", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Mul", ["shape", "two"], ["doubled"]),
        helper.make_node("Shape", ["y"], ["size"]),
    ]
    graph = helper.make_graph(
        nodes,
        "shape_arithmetic",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4, 6])],
        [
            helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 24]),
            helper.make_tensor_value_info("doubled", onnx.TensorProto.INT64, [3]),
            helper.make_tensor_value_info("size", onnx.TensorProto.INT64, [2]),
        ],
        [
            onnx.numpy_helper.from_array(np.array([2], np.int64), "two"),
            onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
            onnx.numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    assert result.runtime.shapes == "dynamic", result.notes
    rng = np.random.default_rng(7)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        for n in (1, 3):
            x = rng.normal(0, 1, (n, 4, 6)).astype(np.float32)
            got = runner.run({"x": x})
            want = reference(path, [{"x": x}])[0]
            assert got["doubled"].tolist() == want["doubled"].tolist() == [2 * n, 8, 12]
            assert got["size"].tolist() == want["size"].tolist() == [n, 24]
            np.testing.assert_array_equal(got["y"], want["y"])
    assert not any("topological order" in n for n in result.notes)  # it was in order


def test_a_mask_sliced_to_a_length_is_no_shape(tmp_path: Path) -> None:
    """GPT-2's attention slices its causal-mask buffer to the keys' length (a Slice of a
    constant whose ends come from a Shape) and masks the scores with it (Where), then adds
    the attention mask. The Slice and the Where were taken for shapes, since a shape reached
    their inputs, and the scores cast to int64 on their way to the Add: TVM refused the
    model ("Binary operators must have the same datatype"), which has no shape in it: a
    dynamic build failed, and a static one ran at the opt shape only."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["length"]),
        helper.make_node("Slice", ["causal", "zero", "length", "zero"], ["mask"]),
        helper.make_node("Where", ["mask", "x", "low"], ["masked"]),
        helper.make_node("Add", ["masked", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "sliced_mask",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 1])],
        [
            onnx.numpy_helper.from_array((np.arange(16) % 3 > 0).reshape(16, 1), "causal"),
            onnx.numpy_helper.from_array(np.array([0], np.int64), "zero"),
            onnx.numpy_helper.from_array(np.array([1], np.int64), "one"),
            onnx.numpy_helper.from_array(np.array(-100.0, np.float32), "low"),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    assert result.runtime.shapes == "dynamic", result.notes
    x = np.random.default_rng(3).normal(0, 1, (7, 1)).astype(np.float32)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"x": x})["y"]
    want = reference(path, [{"x": x}])[0]["y"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (want < -90).sum() == 3  # rows 0, 3 and 6 masked: not a vacuous comparison


def test_only_a_graph_out_of_order_is_sorted_and_noted() -> None:
    """A graph in a valid order is left as it is, though a level-by-level sort would reorder
    it (the note "not in topological order" was on artifacts of graphs that were); one with
    a consumer before its producer is sorted."""
    relu = helper.make_node("Relu", ["x"], ["a"])
    late = helper.make_node("Neg", ["a"], ["b"])
    side = helper.make_node("Abs", ["x"], ["c"])  # level 1, after a level-2 node
    add = helper.make_node("Add", ["b", "c"], ["y"])

    def model(nodes: list[onnx.NodeProto]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
        y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
        return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))

    ordered = model([relu, late, side, add])
    assert topological_order(ordered) is False
    assert [n.op_type for n in ordered.graph.node] == ["Relu", "Neg", "Abs", "Add"]
    shuffled = model([add, late, relu, side])
    assert topological_order(shuffled) is True
    ops = [n.op_type for n in shuffled.graph.node]
    assert ops.index("Relu") < ops.index("Neg") < ops.index("Add") and ops.index("Abs") < 3


def test_a_one_hot_embedding_builds(tmp_path: Path) -> None:
    """tf2onnx writes token-type embeddings as OneHot -> MatMul: TVM's OneHot returned
    float64 whatever its values' type, and the float32 MatMul reading it refused the model.
    Cast back to the values' type, the artifact computes what ONNX Runtime does."""
    if not HAVE_TVM:
        pytest.skip("apache-tvm is not installed")
    nodes = [
        helper.make_node("OneHot", ["ids", "depth", "values"], ["hot"], axis=-1),
        helper.make_node("MatMul", ["hot", "table"], ["y"]),
    ]
    table = np.random.default_rng(8).normal(0, 1, (3, 5)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "one_hot_embedding",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 5])],
        [
            onnx.numpy_helper.from_array(np.array(3, np.int64), "depth"),
            onnx.numpy_helper.from_array(np.array([0, 1], np.float32), "values"),
            onnx.numpy_helper.from_array(table, "table"),
        ],
    )
    path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    ids = np.array([[0, 1, 2, 1], [2, 2, 0, 1]], np.int64)
    out, result, contract, _ = build_tvm(path, "cpu", tmp_path)
    with open_runner("tvm", out, result.runtime, contract, threads=1) as runner:
        got = runner.run({"ids": ids})["y"]
    np.testing.assert_allclose(got, table[ids], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, reference(path, [{"ids": ids}])[0]["y"], rtol=1e-6)
