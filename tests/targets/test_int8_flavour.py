"""The int8 flavour read off a quantized graph (targets/int8_flavour.py), on tiny models
quantized here by ONNX Runtime's own quantizer (static QDQ and dynamic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

from compiler.core.host import Requirements
from targets.int8_flavour import int8_flavour, with_int8_flavour
from tests.models import save, tiny_mlp


class _Feeds:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.feeds = iter([{"x": rng.normal(0, 1, (2, 8)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _static(tmp: Path, act: QuantType, weight: QuantType, reduce_range: bool) -> Path:
    src, dst = save(tiny_mlp(), tmp / "f.onnx"), tmp / "q.onnx"
    quantize_static(
        src,
        dst,
        _Feeds(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=act,
        weight_type=weight,
    )
    return dst


@pytest.mark.parametrize(
    ("act", "weight", "reduce_range", "flavour"),
    [
        (QuantType.QUInt8, QuantType.QInt8, False, "u8s8"),
        (QuantType.QUInt8, QuantType.QInt8, True, "u8s8-rr"),
        (QuantType.QInt8, QuantType.QInt8, False, "s8s8"),
        (QuantType.QUInt8, QuantType.QUInt8, False, "u8u8"),
    ],
)
def test_static_qdq_flavours(
    tmp_path: Path, act: QuantType, weight: QuantType, reduce_range: bool, flavour: str
) -> None:
    path = _static(tmp_path, act, weight, reduce_range)
    assert int8_flavour(onnx.load(path), tmp_path) == flavour


def test_dynamic_int8_has_u8_activations(tmp_path: Path) -> None:
    src, dst = save(tiny_mlp(), tmp_path / "f.onnx"), tmp_path / "d.onnx"
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    assert int8_flavour(onnx.load(dst), tmp_path) == "u8s8"


def test_a_float_model_has_no_flavour_and_keeps_its_requirements(tmp_path: Path) -> None:
    path = save(tiny_mlp(), tmp_path / "f.onnx")
    req = Requirements(arch="x86_64", runtime="onnxruntime")
    assert with_int8_flavour(req, path) == req


def test_requirements_name_the_classes_the_flavour_is_meant_for(tmp_path: Path) -> None:
    path = _static(tmp_path, QuantType.QUInt8, QuantType.QInt8, True)
    req = with_int8_flavour(Requirements(arch="x86_64", runtime="onnxruntime"), path)
    assert req.int8 == "u8s8-rr" and req.meant_for == ["x86-64", "avx2", "avx512"]
    assert req.isa == []  # meant for, not needed: it runs on a VNNI host too


def _two_convs(conv_max: int, depthwise_max: int) -> onnx.ModelProto:
    """x[1,4,8,8] -> Q/DQ -> Conv(4->4, 3x3) -> Q/DQ -> depthwise Conv(group 4) -> y, with
    int8 weights reaching `conv_max` and `depthwise_max` (NNCF's overflow fix leaves the
    depthwise one at full range)."""
    from onnx import TensorProto, helper, numpy_helper

    def weight(shape: tuple[int, ...], top: int) -> np.ndarray:
        w = np.ones(shape, np.int8)
        w.flat[0] = top
        return w

    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.array(0, np.int8), "zw"),
        numpy_helper.from_array(weight((4, 4, 3, 3), conv_max), "w1"),
        numpy_helper.from_array(weight((4, 1, 3, 3), depthwise_max), "w2"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w1", "s", "zw"], ["w1d"]),
        helper.make_node("Conv", ["xd", "w1d"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["h", "s", "z"], ["hq"]),
        helper.make_node("DequantizeLinear", ["hq", "s", "z"], ["hd"]),
        helper.make_node("DequantizeLinear", ["w2", "s", "zw"], ["w2d"]),
        helper.make_node("Conv", ["hd", "w2d"], ["y"], pads=[1, 1, 1, 1], group=4),
    ]
    graph = helper.make_graph(
        nodes,
        "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    ("conv_max", "depthwise_max", "flavour"),
    [(64, 127, "u8s8-rr"), (127, 64, "u8s8"), (64, 64, "u8s8-rr"), (127, 127, "u8s8")],
)
def test_depthwise_weights_do_not_decide_saturation(
    tmp_path: Path, conv_max: int, depthwise_max: int, flavour: str
) -> None:
    """Only weights whose products are summed in pairs decide whether the sums may saturate:
    7-bit convolution weights beside a full-range depthwise one are the AVX2-safe flavour."""
    assert int8_flavour(_two_convs(conv_max, depthwise_max), tmp_path) == flavour
