"""The passes' own ONNX Runtime runs judge the quantization, not the build host's int8
kernels: on x86 without VNNI, ONNX Runtime's u8 x s8 GEMM sums pairs of products in 16 bits
(compiler/core/isa.py), and a search run there natively would judge saturated sums."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from passes import ort_tools
from passes.ort_tools import run_model
from tests.passes.builders import matmul_chain

K = 64  # 255 * 127 per product: every pair of them overflows 16 bits
SCALE_Y = K * 255 * 127 / 200  # the exact sum quantizes to 200


def _saturating_matmul() -> onnx.ModelProto:
    """x[1,64] -> Q(u8) -> DQ -> MatMul(DQ(w: s8, all 127)) -> Q(u8) -> DQ -> y[1,8]."""
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "sx"),
        numpy_helper.from_array(np.array(0, np.uint8), "zx"),
        numpy_helper.from_array(np.full((K, 8), 127, np.int8), "wq"),
        numpy_helper.from_array(np.array(1.0, np.float32), "sw"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
        numpy_helper.from_array(np.array(SCALE_Y, np.float32), "sy"),
        numpy_helper.from_array(np.array(0, np.uint8), "zy"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "sy", "zy"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "sy", "zy"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_int8_runs_without_16_bit_saturation_on_every_host() -> None:
    """The exact sum, 64 x 255 x 127, quantizes to 200. Natively on an AVX2 EPYC (2026-12-03)
    ONNX Runtime returned 101 (every pair clamped to 32767); VNNI and AMX hosts sum in 32
    bits. The passes' runner returns 200 on every host."""
    x = {"x": np.full((1, K), 255.0, np.float32)}
    (out,) = run_model(_saturating_matmul(), [x])
    np.testing.assert_allclose(out["y"] / SCALE_Y, 200.0, rtol=0, atol=1e-3)


def test_a_float_model_runs_as_it_is() -> None:
    """No Q/DQ: the model's own float result, whatever the host."""
    w = np.random.default_rng(0).normal(size=(K, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).normal(size=(1, K)).astype(np.float32)
    (out,) = run_model(model, [{"x": x}])
    np.testing.assert_allclose(out["y"], x @ w, rtol=1e-4, atol=1e-4)


def test_feeds_run_at_once_on_the_cores_given_with_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One thread per feed and a feed per core: the outputs are those of running the feeds
    one by one, bit for bit, in the feeds' order, whatever the core count."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(256, 256)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 256])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.normal(size=(64, 256)).astype(np.float32)} for _ in range(7)]
    threads: set[str] = set()
    second = threading.Event()
    run = ort_tools.session

    def watched(*args: object) -> object:
        sess = run(*args)  # type: ignore[arg-type]

        class Watched:
            def get_outputs(self) -> object:
                return sess.get_outputs()

            def run(self, *a: object) -> object:
                name = threading.current_thread().name
                threads.add(name)
                if len(threads) > 1:
                    second.set()
                elif name.startswith("run_model"):
                    # the pool starts a thread only while the others are busy: on a loaded
                    # host one fast thread took every feed (CI, 2026-12-06); held until a
                    # second one runs, the first cannot
                    second.wait(10)
                return sess.run(*a)

        return Watched()

    monkeypatch.setattr(ort_tools, "session", watched)
    monkeypatch.setattr(ort_tools.os, "sched_getaffinity", lambda pid: {0})
    alone = run_model(model, feeds)
    assert threads == {threading.current_thread().name}
    monkeypatch.setattr(ort_tools.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    threads.clear()
    together = run_model(model, feeds)
    assert 1 < len(threads) <= 3 and all(t.startswith("run_model") for t in threads)
    for a, b, f in zip(alone, together, feeds, strict=True):
        assert np.array_equal(a["y"], b["y"])
        np.testing.assert_allclose(a["y"], np.tanh(f["x"] @ w), rtol=1e-4, atol=1e-4)


def test_relative_speed_reads_which_model_does_less_work() -> None:
    """One MatMul against sixteen of the same size: the one runs faster than the sixteen
    (ratio > 1) and the sixteen slower than the one (< 1), whatever the host's speed, from
    at least 3 interleaved pairs of blocks; a model against itself is neither 2x faster nor
    slower."""
    feed = {"x": np.random.default_rng(1).normal(0, 1, (64, 256)).astype(np.float32)}
    one, sixteen = matmul_chain(1), matmul_chain(16)
    faster, pairs = ort_tools.relative_speed(one, sixteen, feed, 0.05)
    slower, _ = ort_tools.relative_speed(sixteen, one, feed, 0.05)
    same, _ = ort_tools.relative_speed(one, one, feed, 0.05)
    assert faster > 1 > slower and pairs >= 3
    assert 0.5 < same < 2
