"""The ONNX Runtime backend's exact rewrites (targets/onnxruntime/rewrites.py): PRelu with
constant slopes becomes Mul and Max/Min (or Relu + Mul(Min(x, 0))), the artifact returns the
same bits as the reference, and what cannot be rewritten stays."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from targets.onnxruntime.backend import OnnxRuntimeBackend, OnnxRuntimeOptions
from targets.onnxruntime.runtime import session
from tests.targets.builders import qdq_model, reference, request, save


def _prelu_net(channels: int = 8) -> onnx.ModelProto:
    """Conv -> PRelu (slopes <= 1) -> Conv -> PRelu (slopes >= 1, a Constant node) -> Conv ->
    PRelu (slopes on both sides of 1) -> PRelu (slope from the data: left alone)."""
    rng = np.random.default_rng(0)

    def init(name: str, value: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(value.astype(np.float32), name)

    inits = [
        init("w1", rng.normal(0, 0.5, (channels, 3, 3, 3))),
        init("w2", rng.normal(0, 0.3, (channels, channels, 3, 3))),
        init("w3", rng.normal(0, 0.3, (channels, channels, 1, 1))),
        init("s1", rng.uniform(-0.5, 1.0, (channels, 1, 1))),
        init("s3", rng.uniform(0.2, 1.8, (channels, 1, 1))),
    ]
    s2 = numpy_helper.from_array(rng.uniform(1.0, 2.0, (channels, 1, 1)).astype(np.float32))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("PRelu", ["c1", "s1"], ["p1"], name="prelu1"),
        helper.make_node("Constant", [], ["s2"], value=s2, name="slope2"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("PRelu", ["c2", "s2"], ["p2"], name="prelu2"),
        helper.make_node("Conv", ["p2", "w3"], ["c3"], name="conv3"),
        helper.make_node("PRelu", ["c3", "s3"], ["p3"], name="prelu3"),
        helper.make_node("Sigmoid", ["p3"], ["gate"], name="gate"),
        helper.make_node("PRelu", ["p3", "gate"], ["y"], name="prelu_data"),
    ]
    graph = helper.make_graph(
        nodes,
        "prelu_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 16, 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _build(src: Path, tmp_path: Path, precision: str = "fp32") -> tuple[Path, list[str]]:
    out = tmp_path / f"out-{precision}"
    out.mkdir()
    req, _ = request(src, OnnxRuntimeOptions(), tmp_path, precision=precision)
    result = OnnxRuntimeBackend().build(src, req, out)
    return out / src.name, result.notes


def _ops(path: Path) -> Counter[str]:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_prelu_with_constant_slopes_is_rewritten_and_returns_the_same_bits(
    tmp_path: Path,
) -> None:
    src = save(_prelu_net(), tmp_path / "src")
    built, notes = _build(src, tmp_path)
    ops = _ops(built)
    assert ops["PRelu"] == 1  # the slope computed from the data stays a PRelu
    assert ops["Max"] == 1 and ops["Min"] == 2 and ops["Relu"] == 1 and ops["Add"] == 1
    assert notes == [
        "3 PRelu rewritten as Mul and Max/Min (exact) for ONNX Runtime's CPU kernels "
        "(targets/onnxruntime/rewrites.py)"
    ]
    feeds = [
        {"x": np.random.default_rng(i).normal(0, 2, (2, 3, 16, 16)).astype(np.float32)}
        for i in range(3)
    ]
    ref = reference(src, feeds)
    sess = session(built, threads=1)
    for feed, want in zip(feeds, ref, strict=True):
        (got,) = sess.run(["y"], feed)
        np.testing.assert_array_equal(got, want["y"])
        assert (want["y"] < 0).any()  # the negative side was exercised


def test_a_quantized_model_keeps_its_quantization_and_its_bits(tmp_path: Path) -> None:
    """Static QDQ int8 leaves PRelu in float between DequantizeLinear and QuantizeLinear (ONNX
    Runtime's quantizer does not quantize it); the rewrite there is as exact. With 7-bit
    weights: on x86 without VNNI, full-range int8 sums may saturate in 16 bits, and which do
    depends on the kernels the graph's groups become (an AVX2 EPYC, 2026-12-03: 662 of 2048
    values differed at full range, none at 7 bits; none either way on VNNI and AMX hosts)."""
    src = save(_prelu_net(), tmp_path / "src")
    rng = np.random.default_rng(5)
    calib = [{"x": rng.normal(0, 2, (1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    int8 = qdq_model(src, calib, reduce_range=True)
    assert _ops(int8)["PRelu"] == 4
    built, notes = _build(int8, tmp_path, "int8")
    assert (
        _ops(built)["PRelu"] == 1 and _ops(built)["QuantizeLinear"] == _ops(int8)["QuantizeLinear"]
    )
    assert notes and notes[0].startswith("3 PRelu rewritten")
    (want,) = reference(int8, calib[:1])
    (got,) = session(built, threads=1).run(["y"], calib[0])
    np.testing.assert_array_equal(got, want["y"])


def test_a_model_without_prelu_is_copied_as_it_is(tmp_path: Path) -> None:
    from tests.models import tiny_mlp

    src = save(tiny_mlp(), tmp_path / "src")
    built, notes = _build(src, tmp_path)
    assert notes == [] and built.read_bytes() == src.read_bytes()
