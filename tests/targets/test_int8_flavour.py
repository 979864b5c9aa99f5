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
