from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.core.contract import DimRange
from compiler.core.errors import ConfigError, ContractError
from compiler.pipeline.interface import extract_contract, name_unnamed_dims
from tests.models import tiny_mlp


def test_contract_reads_names_dtypes_and_symbolic_dims() -> None:
    c = extract_contract(tiny_mlp())
    assert [(t.name, t.dtype, t.shape) for t in c.inputs] == [("x", "float32", ["batch", 8])]
    assert [(t.name, t.dtype, t.shape) for t in c.outputs] == [("y", "float32", ["batch", 4])]
    # a dim seen only as axis 0 of inputs is taken as batch, with a default range
    assert c.dims["batch"] == DimRange(min=1, opt=1, max=64)


def test_config_ranges_apply_and_unknown_dims_are_rejected() -> None:
    c = extract_contract(tiny_mlp(), {"batch": DimRange(min=2, opt=4, max=8)})
    assert c.input_shapes() == {"x": (4, 8)}
    with pytest.raises(ConfigError, match=r"dims \['seq'\] that the model does not have"):
        extract_contract(tiny_mlp(), {"seq": DimRange(min=1, opt=1, max=2)})


def test_dim_range_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DimRange(min=4, opt=2, max=8)


def test_unnamed_dynamic_dims_get_stable_names() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g)
    named = name_unnamed_dims(m)
    assert named == {"x_d0": "input 'x' axis 0", "y_d0": "output 'y' axis 0"}
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_d0"


def test_non_batch_symbolic_dim_without_range_is_a_clear_error() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "seq"])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )
    c = extract_contract(m)
    with pytest.raises(ConfigError, match=r"dim 'seq' has no range.*--set dims.seq.opt=N"):
        c.input_shapes()


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, r"missing \['x'\]"),
        ({"x": np.zeros((1, 8), np.float32), "z": np.zeros(1)}, r"unexpected \['z'\]"),
        ({"x": np.zeros((1, 8), np.float64)}, r"dtype float64, contract says float32"),
        ({"x": np.zeros((8,), np.float32)}, r"rank 1 .* contract says rank 2"),
        ({"x": np.zeros((1, 7), np.float32)}, r"axis 1: size 7, contract fixes it at 8"),
        ({"x": np.zeros((65, 8), np.float32)}, r"size 65 outside the allowed range \[1, 64\]"),
    ],
)
def test_validate_feeds_names_the_problem(feeds: dict, message: str) -> None:
    c = extract_contract(tiny_mlp())
    with pytest.raises(ContractError, match=message):
        c.validate_feeds(feeds)


def test_validate_feeds_checks_dim_consistency_across_inputs() -> None:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    )
    c = extract_contract(m)
    with pytest.raises(ContractError, match="dim 'n' is 3 here but 2 in another input"):
        c.validate_feeds({"a": np.zeros((2, 2), np.float32), "b": np.zeros((3, 2), np.float32)})
