"""The interface contract read off a graph: dim naming (unnamed, '?', -1), scalar inputs,
ranges (config, opt alone, batch default), `--set` keys for any dim name, feed validation."""

from __future__ import annotations

import shlex

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.core.contract import DimRange, set_flag
from compiler.core.errors import ConfigError, ContractError
from compiler.pipeline.config import resolve_config
from compiler.pipeline.interface import extract_contract, name_unnamed_dims
from tests.models import tiny_mlp


def _relu(
    shape_in: list, shape_out: list | None = None, dtype: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", dtype, shape_in)
    y = helper.make_tensor_value_info("y", dtype, shape_out if shape_out is not None else shape_in)
    return helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    )


def _with_minus_one(model: onnx.ModelProto, axis: int) -> onnx.ModelProto:
    """Store the literal -1 some exporters write for a dynamic dim (helper cannot)."""
    for vi in (model.graph.input[0], model.graph.output[0]):
        d = vi.type.tensor_type.shape.dim[axis]
        d.Clear()
        d.dim_value = -1
    return model


def test_contract_reads_names_dtypes_and_symbolic_dims() -> None:
    c = extract_contract(tiny_mlp())
    assert [(t.name, t.dtype, t.shape) for t in c.inputs] == [("x", "float32", ["batch", 8])]
    assert [(t.name, t.dtype, t.shape) for t in c.outputs] == [("y", "float32", ["batch", 4])]
    # a dim at axis 0 of an input is taken as batch, with a default range, and says so
    assert c.dims["batch"] == DimRange(min=1, opt=1, max=64)
    assert c.dim_origins["batch"].source == "batch"


def _recurrent(layout: int, x_shape: list) -> onnx.ModelProto:
    """A GRU over the input x (layout 0: [time, batch, 4], PyTorch's batch_first=False)."""
    w = onnx.numpy_helper.from_array(np.ones((1, 24, 4), np.float32), "w")
    r = onnx.numpy_helper.from_array(np.ones((1, 24, 8), np.float32), "r")
    gru = helper.make_node("GRU", ["x", "w", "r"], ["", "h"], hidden_size=8, layout=layout)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    batch = x_shape[1 - layout]
    h_shape = [1, batch, 8] if layout == 0 else [batch, 1, 8]
    h = helper.make_tensor_value_info("h", TensorProto.FLOAT, h_shape)
    graph = helper.make_graph([gru], "g", [x], [h], [w, r])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(("layout", "x_shape"), [(0, ["t", "b", 4]), (1, ["b", "t", 4])])
def test_a_recurrent_ops_time_axis_is_no_batch(layout: int, x_shape: list) -> None:
    """A time-major input's axis 0 is its sequence: taken as batch it was served and judged
    one step long (opt 1, max 64); its batch, at axis 1, was probed as a length (opt 224)."""
    c = extract_contract(_recurrent(layout, x_shape))
    assert c.dims["b"] == DimRange(min=1, opt=1, max=64)
    assert c.dim_origins["b"].source == "batch"
    assert "t" not in c.dims  # left to probing, as any length
    if layout == 0:
        assert "batch axis of a recurrent op" in c.dim_origins["b"].note


def test_config_ranges_apply_and_unknown_dims_are_rejected() -> None:
    c = extract_contract(tiny_mlp(), {"batch": DimRange(min=2, opt=4, max=8)})
    assert c.input_shapes() == {"x": (4, 8)}
    assert c.dim_origins["batch"].source == "config"
    with pytest.raises(ConfigError, match=r"dims \['seq'\] that the model does not have"):
        extract_contract(tiny_mlp(), {"seq": DimRange(min=1, opt=1, max=2)})


def test_dim_range_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        DimRange(min=4, opt=2, max=8)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"opt": 8}, (4, 8, 16)),
        ({"opt": 1}, (1, 1, 2)),
        ({"opt": 48, "max": 48}, (24, 48, 48)),
        ({"opt": 3, "min": 3}, (3, 3, 6)),
    ],
)
def test_dim_range_from_opt_alone_spans_around_it(given: dict, expected: tuple) -> None:
    r = DimRange.model_validate(given)
    assert (r.min, r.opt, r.max) == expected


def test_unnamed_dynamic_dims_get_stable_names() -> None:
    m = _relu([None, 3])
    named = name_unnamed_dims(m)
    assert named == {
        "x_d0": "input 'x' axis 0 (had no name)",
        "y_d0": "output 'y' axis 0 (had no name)",
    }
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_d0"


def test_two_question_mark_dims_are_two_dims() -> None:
    m = _relu(["n", 3, "?", "?"])
    named = name_unnamed_dims(m)
    assert sorted(named) == ["x_d2", "x_d3", "y_d2", "y_d3"]
    assert named["x_d2"] == "input 'x' axis 2 (was '?')"
    c = extract_contract(m, {"x_d2": DimRange(opt=48), "x_d3": DimRange(opt=320)})
    assert c.inputs[0].shape == ["n", 3, "x_d2", "x_d3"]
    assert c.input_shapes() == {"x": (1, 3, 48, 320)}  # H and W need not be equal
    c.validate_feeds({"x": np.zeros((1, 3, 40, 300), np.float32)})


def test_minus_one_is_a_dynamic_dim_not_a_size() -> None:
    m = _with_minus_one(_relu([1, 3]), 0)
    c = extract_contract(m)  # read directly: named the same way normalize names it
    assert c.inputs[0].shape == ["x_d0", 3]
    assert c.dims["x_d0"] == DimRange(min=1, opt=1, max=64)  # axis 0: the batch default
    assert c.named_dims["x_d0"] == "input 'x' axis 0 (was -1)"
    c.validate_feeds({"x": np.zeros((5, 3), np.float32)})
    named = name_unnamed_dims(m)
    assert "x_d0" in named and m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "x_d0"


def test_given_names_never_collide_with_the_models_own() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["x_d1", None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["x_d1", None])
    m = helper.make_model(
        helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    )
    c = extract_contract(m)
    assert c.inputs[0].shape == ["x_d1", "x_d1_2"]


def test_scalar_input_stays_a_scalar() -> None:
    m = _relu([], dtype=TensorProto.INT64)
    c = extract_contract(m)
    assert c.inputs[0].shape == [] and c.input_shapes() == {"x": ()}
    c.validate_feeds({"x": np.asarray(16000, np.int64)})
    with pytest.raises(ContractError, match=r"rank 1 \[1\], contract says rank 0"):
        c.validate_feeds({"x": np.asarray([16000], np.int64)})


def test_unranged_dim_is_named_with_the_set_that_fixes_it() -> None:
    m = _relu([1, "p2o.DynamicDimension.1"])
    c = extract_contract(m)
    assert c.unranged_dims() == ["p2o.DynamicDimension.1"]
    assert c.dim_axes("p2o.DynamicDimension.1") == ["input 'x' axis 1"]
    with pytest.raises(ConfigError) as err:
        c.input_shapes()
    assert """--set 'dims."p2o.DynamicDimension.1".opt=N'""" in str(err.value)


def test_set_flag_quotes_only_what_needs_it() -> None:
    assert set_flag("dims", "seq", "opt") == "--set dims.seq.opt=N"
    assert set_flag("dims", "a.b", "max", value="8") == """--set 'dims."a.b".max=8'"""
    assert set_flag("inputs", "ids", "values", value="[0,1]") == "--set 'inputs.ids.values=[0,1]'"


@pytest.mark.parametrize(
    "name", ["p2o.DynamicDimension.1", "serving_default_input_2:0_d0", 'a"b', "x=y"]
)
def test_any_dim_name_can_be_set_with_opt_alone(name: str) -> None:
    """The `--set` a message suggests is the `--set` that works, whatever the dim is called."""
    flag = set_flag("dims", name, "opt", value="4")
    item = shlex.split(flag)[1]
    cfg = resolve_config(None, ["cpu"], [item])
    assert cfg.dims[name] == DimRange(min=2, opt=4, max=8)
    m = _relu([1, name])
    assert extract_contract(m, cfg.dims).input_shapes() == {"x": (1, 4)}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ('dims."a.b.opt=4', "has no closing"),
        ('dims."a"b.opt=4', "must be followed by '.' or '='"),
        ("dims.a..opt=4", "empty part in the key"),
        ("dims.a.=4", "ends with '.'"),
    ],
)
def test_malformed_quoted_keys_are_refused(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, ["cpu"], [item])


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({}, r"missing \['x'\]"),
        ({"x": np.zeros((1, 8), np.float32), "z": np.zeros(1)}, r"unexpected \['z'\]"),
        ({"x": np.zeros((1, 8), np.float64)}, r"dtype float64, contract says float32"),
        ({"x": np.zeros((8,), np.float32)}, r"rank 1 .* contract says rank 2"),
        ({"x": np.zeros((1, 7), np.float32)}, r"axis 1: size 7, contract fixes it at 8"),
        (
            {"x": np.zeros((65, 8), np.float32)},
            r"size 65 outside the allowed range \[1, 64\] \(a build with --set dims.batch.max=65",
        ),
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


def test_outputs_sized_by_the_data_are_those_with_a_dim_no_input_has() -> None:
    from compiler.core.contract import Contract, TensorSpec

    contract = Contract(
        inputs=[TensorSpec(name="image", dtype="float32", shape=["batch", 3, 320, 320])],
        outputs=[
            TensorSpec(name="scores", dtype="float32", shape=["batch", 80]),
            TensorSpec(name="boxes", dtype="float32", shape=["kept", 6]),  # after NMS
            TensorSpec(name="count", dtype="int32", shape=[1]),
        ],
    )
    assert contract.data_sized_outputs() == {"boxes"}
