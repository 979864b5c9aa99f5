"""nncf: NNCF int8 (QDQ) on a small CNN, OpenVINO running it in int8, the one int8 gate with
NNCF's accuracy control, ignored scopes, calibration warnings, quiet output, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.errors import NotApplicable, PassError
from compiler.core.tolerance import DEFAULT_TOLERANCES, Tolerance
from passes.base import op_histogram
from passes.nncf import NncfConfig, NncfPass
from passes.quantize import GENERATED_DATA_WARNING
from tests.passes.builders import (
    attention_block,
    context,
    in_if_branches,
    outlier_mlp,
    parity,
    run,
    small_cnn,
    smooth_images,
)

pytest.importorskip("nncf")

INT8 = DEFAULT_TOLERANCES["int8"]


def _nncf(
    model: onnx.ModelProto,
    tmp: Path,
    feeds: list | None = None,
    source: str = "user",
    **kw: object,
):  # -> PassResult
    feeds = smooth_images(16) if feeds is None else feeds
    return NncfPass(NncfConfig(**kw))(model, context(model, tmp, feeds, source=source))


def _mlp_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (4, 16)).astype(np.float32)} for _ in range(count)]


def test_qdq_on_cnn_passes_the_int8_gate(tmp_path: Path) -> None:
    model = small_cnn()
    result = _nncf(model, tmp_path, accuracy_control={"enabled": True})
    ops = op_histogram(result.model)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 5  # acts + conv/gemm weights
    assert result.record["model_type"] == "cnn" and result.record["preset"] == "performance"
    assert result.record["calibration"] == {"samples": 16, "source": "user"}
    assert result.warnings == []
    ac = result.record["accuracy_control"]
    final = ac.get("gate_after", ac["gate_before"])
    assert final["passed"] is True, ac
    held_out = parity(model, result.model, smooth_images(32, seed=7))["y"]
    assert held_out.cosine >= INT8.min_cosine


def test_openvino_compiles_the_qdq_model_in_int8(tmp_path: Path) -> None:
    ov = pytest.importorskip("openvino")
    model = small_cnn()
    result = _nncf(model, tmp_path)
    path = tmp_path / "int8.onnx"
    onnx.save(result.model, path)
    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    runtime = compiled.get_runtime_model().get_ordered_ops()
    conv_precisions = {
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in runtime
        if op.get_rt_info()["layerType"].astype(str) == "Convolution"
    }
    assert conv_precisions <= {"u8", "i8"} and conv_precisions, conv_precisions
    feeds = smooth_images(8, seed=3)
    ort_out = run(result.model, feeds)
    for feed, expected in zip(feeds, ort_out, strict=True):
        got = compiled(feed)[0]
        np.testing.assert_allclose(got, expected["y"], atol=1e-2)


def test_auto_model_type_reads_attention(tmp_path: Path) -> None:
    model = attention_block()
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.normal(0, 1, (2, 8, 16)).astype(np.float32)} for _ in range(4)]
    result = _nncf(model, tmp_path, feeds)
    assert result.record["model_type"] == "transformer"
    assert "'attention_blocks': 1" in result.record["model_type_rule"]
    assert parity(model, result.model, feeds)["y"].cosine >= INT8.min_cosine


def test_accuracy_control_keeps_the_costly_layer_in_float(tmp_path: Path) -> None:
    """The gate (min_cosine 0.999 here) fails plain int8 of the outlier MLP; NNCF's accuracy
    control, with the gate's margin as its metric, reverts the first MatMul and passes."""
    model = outlier_mlp()
    result = _nncf(
        model,
        tmp_path,
        _mlp_feeds(8, seed=1),
        accuracy_control={"enabled": True, "min_cosine": 0.999},
    )
    ac = result.record["accuracy_control"]
    assert ac["gate_before"]["passed"] is False
    assert "cosine" in ac["gate_before"]["outputs"]["y"]["failures"][0]
    assert ac["kept_in_float"] == ["mm1"]
    assert ac["gate_after"]["passed"] is True
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in result.model.graph.node}
    assert nodes["mm1"].input[1] not in dq_outputs and nodes["mm2"].input[1] in dq_outputs


def test_accuracy_control_leaves_a_passing_model_alone(tmp_path: Path) -> None:
    result = _nncf(
        outlier_mlp(outlier=1.0), tmp_path, _mlp_feeds(8, 1), accuracy_control={"enabled": True}
    )
    ac = result.record["accuracy_control"]
    assert ac["gate_before"]["passed"] is True and ac["kept_in_float"] == []
    assert "gate_after" not in ac


def test_accuracy_control_budget_spent_is_reported(tmp_path: Path) -> None:
    ac_cfg = {"enabled": True, "min_cosine": 0.99999, "max_iterations": 1}
    result = _nncf(outlier_mlp(), tmp_path, _mlp_feeds(8, 1), accuracy_control=ac_cfg)
    ac = result.record["accuracy_control"]
    assert ac["gate_after"]["passed"] is False and len(ac["kept_in_float"]) == 1
    assert "max_iterations=1" in ac["budget_spent"]


def test_accuracy_control_needs_room_under_the_gate(tmp_path: Path) -> None:
    """min_cosine 1.0: even the float model only just meets it; nothing to search for."""
    ac_cfg = {"enabled": True, "min_cosine": 1.0}
    result = _nncf(outlier_mlp(), tmp_path, _mlp_feeds(8, 1), accuracy_control=ac_cfg)
    assert "no int8 model can pass it" in result.record["accuracy_control"]["not_run"]


def test_gate_uses_the_build_tolerance_and_reference(tmp_path: Path) -> None:
    model = outlier_mlp(outlier=1.0)
    calls: list[int] = []

    def reference(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(1)
        return run(model, [feed])[0]

    strict = {"int8": Tolerance(atol=None, min_cosine=0.9999999, min_top1=0.9)}
    ctx = context(model, tmp_path, _mlp_feeds(8, 1), reference=reference, tolerances=strict)
    cfg = NncfConfig(accuracy_control={"enabled": True, "max_iterations": 1})
    ac = NncfPass(cfg)(model, ctx).record["accuracy_control"]
    assert calls, "the reference was not used"
    assert "< 0.9999999" in ac["gate_before"]["outputs"]["y"]["failures"][0]


def test_ignored_scope_types_stay_float(tmp_path: Path) -> None:
    result = _nncf(small_cnn(), tmp_path, ignored_scope={"types": ["Gemm"]})
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    nodes = {n.name: n for n in result.model.graph.node}
    assert not set(nodes["fc"].input) & dq_outputs
    assert nodes["conv2"].input[1] in dq_outputs


def test_unknown_ignored_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PassError, match=r"ignored_scope.names \['conv9'\] are not nodes"):
        _nncf(small_cnn(), tmp_path, ignored_scope={"names": ["conv9"]})


def test_ignored_pattern_matching_nothing_quotes_nncf(tmp_path: Path) -> None:
    with pytest.raises(
        PassError, match=r"nncf refused the model or its options: Ignored nodes that matches "
    ):
        _nncf(small_cnn(), tmp_path, ignored_scope={"patterns": ["nomatch.*"]})


def test_everything_ignored_is_an_error(tmp_path: Path) -> None:
    scope = {"types": ["Conv", "Gemm", "GlobalAveragePool", "Relu", "BatchNormalization"]}
    with pytest.raises(PassError, match="no node is quantized"):
        _nncf(small_cnn(), tmp_path, ignored_scope=scope)


def test_no_calibration_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PassError, match="needs calibration samples and got none"):
        _nncf(small_cnn(), tmp_path, feeds=[])


def test_generated_calibration_warns_loudly(tmp_path: Path) -> None:
    result = _nncf(small_cnn(), tmp_path, smooth_images(4), source="generated")
    assert result.warnings == [GENERATED_DATA_WARNING]
    assert result.summary is not None and result.summary.warnings == [GENERATED_DATA_WARNING]


def test_nothing_reaches_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """NNCF draws progress bars on stdout; build output must not carry them."""
    _nncf(
        outlier_mlp(),
        tmp_path,
        _mlp_feeds(8, 1),
        accuracy_control={"enabled": True, "min_cosine": 0.999},
    )
    assert capfd.readouterr().out == ""


def test_deterministic(tmp_path: Path) -> None:
    model = small_cnn()
    a = _nncf(model, tmp_path).model.SerializeToString(deterministic=True)
    b = _nncf(model, tmp_path).model.SerializeToString(deterministic=True)
    assert a == b


def test_a_model_with_nothing_to_quantize_is_not_applicable(tmp_path: Path) -> None:
    """Every weighted node inside an If branch (silero_vad): NNCF quantizes nothing, and
    with nothing ignored that is the model's shape, not a failure."""
    model = in_if_branches(small_cnn())
    with pytest.raises(NotApplicable, match="nothing for NNCF int8 to quantize: its 6 "):
        _nncf(model, tmp_path, feeds=[{**f, "c": np.array(True)} for f in smooth_images(4)])


def _scaled_matmul(cast: bool) -> onnx.ModelProto:
    """x -> ai.onnx.ml Scaler (as skl2onnx writes a StandardScaler) [-> Cast] -> MatMul."""
    h = onnx.helper
    w = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
    scaler = h.make_node(
        "Scaler", ["x"], ["scaled"], domain="ai.onnx.ml", offset=[0.5] * 16, scale=[2.0] * 16
    )
    nodes = [scaler, h.make_node("Cast", ["scaled"], ["cast"], to=onnx.TensorProto.FLOAT)]
    nodes = nodes if cast else nodes[:1]
    nodes.append(h.make_node("MatMul", [nodes[-1].output[0], "w"], ["y"]))
    graph = h.make_graph(
        nodes,
        "sklearn_like",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 8])],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    opsets = [h.make_opsetid("", 17), h.make_opsetid("ai.onnx.ml", 3)]
    return h.make_model(graph, opset_imports=opsets)


def test_a_graph_nncf_fails_on_names_its_foreign_ops(tmp_path: Path) -> None:
    """skl2onnx's Scaler (ai.onnx.ml) leaves its output untyped: NNCF's ONNX backend raised a
    bare KeyError on the Cast after it, and placed nothing on a MatMul after it. Each error
    names the ops NNCF does not know, and what to use instead."""
    feeds = _mlp_feeds(8, 0)
    with pytest.raises(
        PassError,
        match=r"nncf failed on the model \(KeyError: 'scaled'\); .*"
        r"\(ai\.onnx\.ml\.Scaler\).*ort-int8",
    ):
        _nncf(_scaled_matmul(cast=True), tmp_path / "cast", feeds=feeds)
    with pytest.raises(
        NotApplicable,
        match=r"placed nothing on the model's 1 Conv/MatMul.* domain .*: ai\.onnx\.ml\.Scaler\)",
    ):
        _nncf(_scaled_matmul(cast=False), tmp_path / "plain", feeds=feeds)


def test_a_graph_nncf_refuses_names_its_foreign_ops(tmp_path: Path) -> None:
    """ONNX Runtime's fused Attention (an optimized BERT's) before a MatMul: NNCF refuses the
    graph ("does not contain input edge connected to 0 port ID"), and the error names the
    ops outside the ONNX domain and what to use instead."""
    rng = np.random.default_rng(0)
    h = onnx.helper
    weights = {
        "qkv_w": rng.normal(size=(16, 48)).astype(np.float32),
        "qkv_b": np.zeros(48, np.float32),
        "w2": rng.normal(size=(16, 16)).astype(np.float32),
    }
    nodes = [
        h.make_node(
            "Attention", ["x", "qkv_w", "qkv_b"], ["a"], domain="com.microsoft", num_heads=2
        ),
        h.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "fused_attention",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 16])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 8, 16])],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    opsets = [h.make_opsetid("", 17), h.make_opsetid("com.microsoft", 1)]
    feeds = [{"x": rng.normal(size=(1, 8, 16)).astype(np.float32)} for _ in range(8)]
    with pytest.raises(
        PassError,
        match=r"nncf refused the model or its options: .*; the model holds ops outside the "
        r"ONNX domain \(com\.microsoft\.Attention\).*ort-int8",
    ):
        _nncf(h.make_model(graph, opset_imports=opsets), tmp_path, feeds=feeds)


def test_overflow_fix_everywhere_makes_7_bit_weights(tmp_path: Path) -> None:
    """NNCF's default fixes the first layer's weights to 7 bits, `enable` every layer's: the
    flavour read off the graph (targets/int8_flavour.py) is then the AVX2-safe one."""
    from targets.int8_flavour import int8_flavour

    model = small_cnn()
    flavours = {
        fix: int8_flavour(_nncf(model, tmp_path / fix, overflow_fix=fix).model, tmp_path)
        for fix in ("first_layer_only", "enable")
    }
    assert flavours == {"first_layer_only": "u8s8", "enable": "u8s8-rr"}


def _constant_cast_mlp(seed: int = 0) -> onnx.ModelProto:
    """x[4,16] -> MatMul -> + Cast(Constant int64 -> float) -> y[4,16]: a Constant that the
    int8 preparation makes an initializer, under a Cast (silero_vad_16k_op15's STFT padding)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (16, 16)).astype(np.float32), "w")
    shift = numpy_helper.from_array(np.arange(16, dtype=np.int64) % 3, "shift_value")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Constant", [], ["shift_i"], name="shift", value=shift),
        helper.make_node("Cast", ["shift_i"], ["shift_f"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Add", ["h", "shift_f"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_cast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_cast_of_a_constant_is_folded_before_nncf(tmp_path: Path) -> None:
    """NNCF 3.4's no-op-Cast pass fails on a Cast whose input is an initializer
    (`AttributeError: type`); the int8 preparation turns Constants into initializers, so it
    folds such Casts into initializers of the cast type, and NNCF quantizes the model."""
    model = _constant_cast_mlp()
    feeds = _mlp_feeds(16, seed=1)
    result = _nncf(model, tmp_path, feeds=feeds, accuracy_control={"enabled": False})
    assert result.record["constant_casts_folded"] == 1
    assert "Cast" not in op_histogram(result.model)
    assert op_histogram(result.model)["QuantizeLinear"] >= 1
    held_out = parity(model, result.model, _mlp_feeds(8, seed=2))["y"]
    assert held_out.cosine is not None and held_out.cosine >= INT8.min_cosine, held_out


def test_sizes_the_model_does_not_run_at_are_dropped_before_nncf(tmp_path: Path) -> None:
    """torch's dynamo exporter states the traced size (11) for tensors past an LSTM whose
    length is dynamic: NNCF's bias correction cut the graph there and fed the cut the data's
    length (5), and failed ('Got invalid dimensions ... Got: 5 Expected: 11'). The pass runs
    the model once and drops what its run contradicts; a right entry stays."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
        for n, s in (("w1", (8, 8)), ("w2", (8, 4)), ("b2", (4,)))
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    f = TensorProto.FLOAT
    stated = [
        helper.make_tensor_value_info("h", f, ["N", 11, 8]),
        helper.make_tensor_value_info("r", f, ["N", 11, 8]),
        helper.make_tensor_value_info("m", f, ["N", "T", 4]),  # right: kept
    ]
    graph = helper.make_graph(
        nodes,
        "stale",
        [helper.make_tensor_value_info("x", f, ["N", "T", 8])],
        [helper.make_tensor_value_info("y", f, ["N", "T", 4])],
        inits,
        value_info=stated,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.normal(size=(2, 5, 8)).astype(np.float32)} for _ in range(8)]
    result = _nncf(model, tmp_path, feeds=feeds)
    assert result.record["stale_shapes_dropped"] == 2
    assert {v.name for v in result.model.graph.value_info} >= {"m"}
    assert op_histogram(result.model)["QuantizeLinear"] >= 2
