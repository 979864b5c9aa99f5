"""Every registered pass imports, parses from its config name, and runs on a tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from passes.registry import PASSES, AnyPassConfig, make_pass
from tests.passes.builders import context, small_cnn, smooth_images

_CONFIG = TypeAdapter(AnyPassConfig)


@pytest.mark.parametrize("name", sorted(PASSES))
def test_each_pass_parses_and_runs(tmp_path: Path, name: str) -> None:
    config = _CONFIG.validate_python({"name": name})
    assert type(config) is PASSES[name].config_cls
    p = make_pass(config)
    assert p.version and p.libraries()["onnx"]
    model = small_cnn()
    result = p(model, context(model, tmp_path, smooth_images(4)))
    assert result.summary is not None
    assert result.summary.name == name and result.summary.version == p.version
    assert [i.name for i in result.model.graph.input] == ["x"]


def test_each_pass_declares_its_output_precision() -> None:
    """What variants derive their precision from (None: numerics preserved)."""
    declared = {name: cls.precision for name, cls in PASSES.items()}
    assert declared == {
        "simplify": None,
        "fuse": None,
        "quantize": "int8",
        "fp16": "fp16",
        "nncf": "int8",
    }


def test_unknown_pass_name_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="'simplify', 'fuse', 'quantize', 'fp16'"):
        _CONFIG.validate_python({"name": "prune"})


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        _CONFIG.validate_python({"name": "quantize", "calibration": "minmax"})


def test_accuracy_aware_block_is_strict() -> None:
    with pytest.raises(ValidationError, match="max_float_layers"):
        _CONFIG.validate_python({"name": "quantize", "accuracy_aware": {"max_float_layers": 0}})


def test_import_passes_stays_cheap() -> None:
    code = (
        "import sys, passes; "
        "heavy = [m for m in ('onnxruntime', 'onnxsim', 'torch', 'onnxruntime.quantization') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"


def test_the_interface_a_pass_keeps_counts_an_output_that_is_a_weight() -> None:
    """An output that is an initializer is part of the model's interface (a quantizer may then
    compute it); an input that is an initializer (IR < 4 lists weights as inputs) is not."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from passes.base import _interface

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xy")
    weight = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4])
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    out = helper.make_model(helper.make_graph([node], "g", [x], [y, weight], [w]))
    assert set(_interface(out)) == {"x", "y", "w"} and _interface(out)["w"][0] == "output"
    listed = helper.make_model(helper.make_graph([node], "g", [x, weight], [y], [w]))
    assert set(_interface(listed)) == {"x", "y"}
