"""What compiler.core.graphs reads off a model: the types and shapes shape inference finds
for its tensors, main graph and subgraphs."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.core.graphs import elem_types, shapes, value_infos


def _model(nodes, inputs, outputs, inits=(), value_info=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", inputs, outputs, initializer=list(inits), value_info=list(value_info)
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name: str, elem: int, dims) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def test_shapes_carry_symbolic_dims_through_inference_and_read_initializers() -> None:
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
            helper.make_node("Cast", ["t"], ["y"], to=TensorProto.INT64),
        ],
        [_vi("x", TensorProto.FLOAT, ["N", 3])],
        [_vi("y", TensorProto.INT64, None)],
        inits=[numpy_helper.from_array(np.zeros((2, 5), np.int32), "w")],
    )
    found = shapes(model)
    assert found["r"] == ["N", 3]
    assert found["t"] == [3, "N"]
    assert found["y"] == [3, "N"]
    assert found["w"] == [2, 5]
    types = elem_types(model)
    assert types["t"] == TensorProto.FLOAT
    assert types["y"] == TensorProto.INT64
    assert types["w"] == TensorProto.INT32


def test_data_prop_computes_a_shape_from_shape_arithmetic() -> None:
    model = _model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Reshape", ["z", "s"], ["y"]),
        ],
        [_vi("x", TensorProto.FLOAT, [2, 3]), _vi("z", TensorProto.FLOAT, [6])],
        [_vi("y", TensorProto.FLOAT, None)],
    )
    assert shapes(model, data_prop=True)["y"] == [2, 3]
    without = shapes(model)["y"]  # rank 2 known, the sizes not (inference names them unk__)
    assert len(without) == 2 and not any(isinstance(d, int) for d in without)


def test_a_graph_input_keeps_its_declared_shape_over_a_value_info_of_the_same_name() -> None:
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [_vi("x", TensorProto.FLOAT, ["N", 3])],
        [_vi("y", TensorProto.FLOAT, None)],
        value_info=[_vi("x", TensorProto.FLOAT, [7, 3])],
    )
    assert shapes(model)["x"] == ["N", 3]
    assert value_infos(model)["x"].tensor_type.shape.dim[0].dim_param == "N"


def test_subgraph_tensors_are_read_and_non_tensors_are_left_out() -> None:
    def branch(op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node(op, ["x"], [f"{op}_out"])],
            op,
            [],
            [_vi(f"{op}_out", TensorProto.FLOAT, None)],
        )

    model = _model(
        [
            helper.make_node(
                "If", ["c"], ["y"], then_branch=branch("Neg"), else_branch=branch("Abs")
            ),
            helper.make_node("SequenceConstruct", ["x"], ["seq"]),
        ],
        [_vi("x", TensorProto.FLOAT, ["N", 4]), _vi("c", TensorProto.BOOL, [])],
        [_vi("y", TensorProto.FLOAT, None)],
    )
    found = shapes(model)
    assert found["Neg_out"] == ["N", 4]
    assert found["Abs_out"] == ["N", 4]
    assert "seq" in value_infos(model)
    assert "seq" not in found
    assert "seq" not in elem_types(model)
