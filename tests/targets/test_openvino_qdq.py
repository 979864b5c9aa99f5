"""targets/openvino/qdq.py: QOperator int8 rewritten into QDQ form computes what the source
computes. Judged on ONNX Runtime, which runs both forms (no OpenVINO needed here; the backend
tests in test_openvino.py convert the result)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from targets.openvino.qdq import operator_form_ops, to_qdq
from tests.targets.builders import conv_net, qoperator_model, save, smooth_images

_MS = "com.microsoft"


def _const(name: str, value: object, dtype: type) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _contrib_net(alpha: float = 1.0, computed_bias: bool = False) -> onnx.ModelProto:
    """x[N,8] -> Q -> QLinearLeakyRelu -> QLinearAdd (with QGemm's output, bias included)
    -> QLinearMul -> QLinearConcat (with the QLinearSigmoid of it) -> DQ -> y[N,16], and the
    same QGemm as float -> z: every contrib op the rewrite knows on a 2-D tensor. With
    `computed_bias` the first QGemm's bias is a node's output, not a constant."""
    rng = np.random.default_rng(0)
    w = rng.integers(-60, 60, (8, 8)).astype(np.int8)
    inits = [
        _const("s", 0.05, np.float32),
        _const("zp", 128, np.uint8),
        _const("s2", 0.08, np.float32),
        _const("ws", rng.uniform(0.005, 0.02, 8), np.float32),  # per output column
        _const("wzp", np.zeros(8), np.int8),
        numpy_helper.from_array(w, "w"),
        _const("bias", rng.integers(-3000, 3000, 8), np.int32),
    ]
    ms = {"domain": _MS}
    nodes = [helper.make_node("Identity", ["bias"], ["bias_id"])] if computed_bias else []
    nodes += [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"]),
        helper.make_node("QLinearLeakyRelu", ["xq", "s", "zp", "s", "zp"], ["r"], alpha=0.1, **ms),
        helper.make_node(
            "QGemm",
            ["xq", "s", "zp", "w", "ws", "wzp", "bias_id" if computed_bias else "bias", "s2", "zp"],
            ["g"],
            alpha=alpha,
            transB=0,
            **ms,
        ),
        helper.make_node("QGemm", ["xq", "s", "zp", "w", "ws", "wzp", "bias"], ["z"], **ms),
        helper.make_node("QLinearAdd", ["r", "s", "zp", "g", "s2", "zp", "s2", "zp"], ["a"], **ms),
        helper.make_node("QLinearMul", ["a", "s2", "zp", "r", "s", "zp", "s2", "zp"], ["m"], **ms),
        helper.make_node("QLinearSigmoid", ["m", "s2", "zp", "s", "zp"], ["sg"], **ms),
        helper.make_node(
            "QLinearConcat", ["s2", "zp", "m", "s2", "zp", "sg", "s", "zp"], ["c"], axis=1, **ms
        ),
        helper.make_node("DequantizeLinear", ["c", "s2", "zp"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "contrib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 8]),
        ],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
    return [sess.run(None, f) for f in feeds]


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(0, 2, (4, 8)).astype(np.float32)} for _ in range(3)]


def test_every_contrib_op_computes_what_the_source_does() -> None:
    source = _contrib_net()
    rewritten, result = to_qdq(source)
    onnx.checker.check_model(rewritten)
    assert not operator_form_ops(rewritten) and result.kept == []
    assert dict(result.rewritten) == {
        "QGemm": 2,
        "QLinearAdd": 1,
        "QLinearConcat": 1,
        "QLinearLeakyRelu": 1,
        "QLinearMul": 1,
        "QLinearSigmoid": 1,
    }
    # the int32 bias became a float initializer for each QGemm; the int32 one is gone
    names = {t.name for t in rewritten.graph.initializer}
    assert "bias" not in names and "bias_float" in names
    for want, got in zip(_run(source, _feeds()), _run(rewritten, _feeds()), strict=True):
        # y: one step of its scale (0.08) where float rounding lands a value on the other
        # side of a half step; z (QGemm's float output) to float rounding
        assert np.max(np.abs(want[0] - got[0])) <= 0.08 + 1e-6
        assert np.mean(want[0] == got[0]) >= 0.9
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
        assert np.max(np.abs(want[1])) > 1.0  # the bias and product are really there


@pytest.mark.parametrize("why", ["alpha", "computed_bias"])
def test_what_it_cannot_rewrite_is_left_and_named(why: str) -> None:
    """A QGemm with alpha != 1 (its bias scale is not written down anywhere), or whose bias is
    not a constant (found after its inputs' DequantizeLinear were made), stays a QGemm, and
    nothing its rewrite began is left behind or read by the QGemm after it."""
    source = _contrib_net(alpha=0.5) if why == "alpha" else _contrib_net(computed_bias=True)
    rewritten, result = to_qdq(source)
    onnx.checker.check_model(rewritten)
    assert operator_form_ops(rewritten) == {"QGemm": 1}
    assert result.kept == ["g"] and "left as they were: ['g']" in result.note()
    made = [n.output[0] for n in rewritten.graph.node]
    assert len(made) == len(set(made))
    for want, got in zip(_run(source, _feeds()), _run(rewritten, _feeds()), strict=True):
        assert np.max(np.abs(want[0] - got[0])) <= 0.08 + 1e-6


@pytest.mark.parametrize(("per_channel", "opset"), [(True, 17), (False, 17), (True, 12)])
def test_an_onnxruntime_qoperator_model_computes_the_same(
    tmp_path: Path, per_channel: bool, opset: int
) -> None:
    """ONNX Runtime's own QOperator output (QLinearConv with per-channel weights and an int32
    bias, QLinearMatMul, QLinearGlobalAveragePool, QLinearSoftmax) in QDQ form: the same
    outputs on ONNX Runtime. Before opset 13 (the zoo's int8 models are opset 10-12) a
    DequantizeLinear has no axis: weights by channel become Cast and Mul, and the result is
    still a valid opset-12 model."""
    src = save(conv_net(), tmp_path / "src")
    qop = onnx.load(qoperator_model(src, smooth_images(8, seed=3), per_channel=per_channel))
    for o in qop.opset_import:
        o.version = opset if o.domain in ("", "ai.onnx") else o.version
    assert operator_form_ops(qop)["QLinearConv"] == 2
    rewritten, result = to_qdq(qop)
    onnx.checker.check_model(rewritten)
    assert not operator_form_ops(rewritten) and result.kept == []
    assert result.rewritten["QLinearConv"] == 2 and result.rewritten["QLinearSoftmax"] == 1
    by_cast = {n.op_type for n in rewritten.graph.node} >= {"Cast", "Mul"}
    assert by_cast == (per_channel and opset < 13)
    feeds = smooth_images(6, seed=5)
    # y is a probability dequantized at 1/256. The QDQ form fuses back into the same int8
    # kernels (a step where rounding differs); weights by Cast and Mul run float convs,
    # whose three requantizations may each round the other way
    bound = (3 if by_cast else 1) / 256 + 1e-6
    for want, got in zip(_run(qop, feeds), _run(rewritten, feeds), strict=True):
        assert np.max(np.abs(want[0] - got[0])) <= bound
