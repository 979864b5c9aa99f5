"""An fp16 model widened to float32 for the int8 passes (passes/upcast.py), and the node order
normalize restores (passes.base.sort_topologically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.transformers.float16 import convert_float_to_float16

from passes.base import half_precision, sort_topologically
from passes.upcast import float32_copy


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feeds)]


def _io(model: onnx.ModelProto) -> list[tuple[str, int]]:
    values = (*model.graph.input, *model.graph.output)
    return [(v.name, v.type.tensor_type.elem_type) for v in values]


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_widened_model_computes_the_fp16_model_in_float32(
    cnn_path: Path, keep_io_types: bool
) -> None:
    original = onnx.load(str(cnn_path))
    half = convert_float_to_float16(original, keep_io_types=keep_io_types)
    assert sort_topologically(half.graph) is not None
    wide = float32_copy(half)
    onnx.checker.check_model(wide)
    assert half_precision(half) == "fp16" and half_precision(wide) is None
    assert _io(wide) == _io(half)  # the interface is the source's
    casts = [n for n in wide.graph.node if n.op_type == "Cast"]
    # float32 -> float32 Casts are gone; fp16 I/O is Cast once where it enters and leaves
    assert len(casts) == (0 if keep_io_types else len(_io(half)))
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    dtype = np.float32 if keep_io_types else np.float16
    feeds = {half.graph.input[0].name: x.astype(dtype)}
    expected = _run(original, {original.graph.input[0].name: x})[0]
    widened, halved = _run(wide, feeds)[0], _run(half, feeds)[0]
    assert widened.dtype == halved.dtype == dtype
    # float32 compute: closer to the float32 original than fp16 compute is, and close to both
    err_wide = np.abs(widened.astype(np.float32) - expected).max()
    err_half = np.abs(halved.astype(np.float32) - expected).max()
    assert err_wide <= err_half + 1e-3
    np.testing.assert_allclose(widened.astype(np.float32), expected, atol=2e-3)


def _if_model() -> onnx.ModelProto:
    """y = If(c, x + k, x * k) with an fp16 constant inside each branch; the If is listed
    before the node that makes the x it reads from the outer scope."""
    k = numpy_helper.from_array(np.full((4,), 2.0, dtype=np.float16), "k")

    def branch(op: str) -> onnx.GraphProto:
        const = helper.make_node("Constant", [], ["k_in"], value=k)
        return helper.make_graph(
            [const, helper.make_node(op, ["xs", "k_in"], [f"{op}_out"])],
            op,
            [],
            [helper.make_tensor_value_info(f"{op}_out", TensorProto.FLOAT16, [4])],
        )

    nodes = [
        helper.make_node("If", ["c"], ["y"], then_branch=branch("Add"), else_branch=branch("Mul")),
        helper.make_node("Identity", ["x"], ["xs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "if16",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_subgraphs_are_ordered_and_widened_too() -> None:
    model = _if_model()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)  # the If reads xs before Identity makes it
    assert sort_topologically(model.graph) is True
    assert [n.op_type for n in model.graph.node] == ["Identity", "If"]
    onnx.checker.check_model(model)
    assert sort_topologically(model.graph) is False  # in order: unchanged
    wide = float32_copy(model)
    branches = [a.g for n in wide.graph.node for a in n.attribute if a.type == a.GRAPH]
    consts = [a.t for g in branches for n in g.node for a in n.attribute if a.name == "value"]
    assert {t.data_type for t in consts} == {TensorProto.FLOAT}
    x = np.arange(4, dtype=np.float16)
    for c in (True, False):
        feeds = {"c": np.array(c), "x": x}
        (got,) = _run(wide, feeds)
        assert got.dtype == np.float16
        np.testing.assert_array_equal(got, _run(model, feeds)[0])


def test_a_cycle_is_left_as_it_was() -> None:
    nodes = [
        helper.make_node("Relu", ["b"], ["a"], name="r1"),
        helper.make_node("Relu", ["a"], ["b"], name="r2"),
    ]
    graph = helper.make_graph(nodes, "cycle", [], [])
    assert sort_topologically(graph) is None
    assert [n.name for n in graph.node] == ["r1", "r2"]
