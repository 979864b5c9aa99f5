"""The int8 loop's coarse steps (passes/int8_search.py): other calibration methods, then the
arithmetic between compute layers kept float, before single layers go back to float; on the
ONNX Runtime quantizer and NNCF alike."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.errors import PassError
from compiler.core.parity import compare_outputs
from compiler.core.tolerance import DEFAULT_TOLERANCES
from passes.base import PassResult
from passes.nncf import AUTO_OFF, NncfConfig, NncfPass
from passes.quantize import QuantizeConfig, QuantizePass
from tests.passes.builders import cancelling_layernorm, context, run

INT8 = DEFAULT_TOLERANCES["int8"]
SHIFT = 64.0  # h's mean: int8 E[h^2] - E[h]^2 fails the int8 gate on both quantizers


def _feeds(count: int, seed: int, rows: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (rows, 32)).astype(np.float32)} for _ in range(count)]


def _held_out_ok(model: onnx.ModelProto, quantized: onnx.ModelProto) -> bool:
    feeds = _feeds(8, seed=2)
    ok, _ = compare_outputs(run(quantized, feeds), run(model, feeds), lambda _n: INT8)
    return ok


def _quantize(
    tmp: Path, feeds: list[dict[str, np.ndarray]] | None = None, **aa: object
) -> PassResult:
    model = cancelling_layernorm(shift=SHIFT)
    cfg = QuantizeConfig(mode="static", accuracy_aware=aa)
    return QuantizePass(cfg)(model, context(model, tmp, feeds or _feeds(8, seed=1)))


def _matmul_inputs_dequantized(model: onnx.ModelProto) -> set[str]:
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[0] in dq}


def test_plain_int8_breaks_the_cancelling_layernorm(tmp_path: Path) -> None:
    model = cancelling_layernorm(shift=SHIFT)
    assert not _held_out_ok(model, _quantize(tmp_path, enabled=False).model)


def test_arithmetic_float_repairs_it_with_the_matmuls_int8(tmp_path: Path) -> None:
    result = _quantize(tmp_path, enabled=True)
    loop = result.record["accuracy_aware"]
    step = loop["arithmetic_float"]
    assert step["kept"] and step["passed"] and step["nodes"] == 11
    assert loop["kept_in_float"] == []  # no compute layer had to go back
    assert _matmul_inputs_dequantized(result.model) == {"mm1", "mm2"}
    assert _held_out_ok(cancelling_layernorm(shift=SHIFT), result.model)


def test_calibration_methods_are_tried_and_the_best_kept(tmp_path: Path) -> None:
    loop = _quantize(tmp_path, enabled=True).record["accuracy_aware"]
    tried = loop["quantizer"]["tried"]
    assert list(tried) == ["minmax", "percentile"]
    assert not any(t["passed"] for t in tried.values())  # so the arithmetic step ran
    best = max(tried, key=lambda m: tried[m]["margin"])
    assert tried[loop["quantizer"]["chosen"]]["margin"] == tried[best]["margin"]


def test_histogram_methods_are_skipped_on_mixed_shapes(tmp_path: Path) -> None:
    feeds = _feeds(4, seed=1) + _feeds(4, seed=3, rows=2)
    loop = _quantize(tmp_path, feeds, enabled=True).record["accuracy_aware"]
    tried = loop["quantizer"]["tried"]
    assert "passed" in tried["minmax"]
    assert "one shape" in tried["percentile"]["skipped"]


def test_arithmetic_step_off_goes_to_single_layers(tmp_path: Path) -> None:
    loop = _quantize(tmp_path, enabled=True, arithmetic_float=False).record["accuracy_aware"]
    assert "arithmetic_float" not in loop
    assert "ranking" in loop  # the per-layer loop ran instead


def _nncf(tmp: Path, source: str) -> PassResult:
    model = cancelling_layernorm(shift=SHIFT)
    ctx = context(model, tmp, _feeds(8, seed=1), source=source)
    return NncfPass(NncfConfig())(model, ctx)


@pytest.mark.parametrize("source", ["generated", "user"])
def test_nncf_accuracy_control_follows_the_data(tmp_path: Path, source: str) -> None:
    """auto: on with the user's data (where the gate means something), off on generated."""
    record = _nncf(tmp_path, source).record
    if source == "generated":
        assert record["accuracy_control_off"] == AUTO_OFF
        assert "accuracy_control" not in record
    else:
        assert "gate_before" in record["accuracy_control"]


def test_nncf_runs_the_same_arithmetic_step(tmp_path: Path) -> None:
    result = _nncf(tmp_path, "user")
    control = result.record["accuracy_control"]
    assert not control["gate_before"]["passed"]  # NNCF's plain int8 breaks it too
    assert control["arithmetic_float"]["nodes"] == 11
    assert control["gate_after"]["passed"]
    assert _held_out_ok(cancelling_layernorm(shift=SHIFT), result.model)


def test_a_loop_that_keeps_everything_float_is_an_error(tmp_path: Path) -> None:
    """An "int8" artifact with no int8 node left would be the float model mislabelled."""
    model = cancelling_layernorm(shift=SHIFT)
    strict = {"int8": dataclasses.replace(INT8, min_cosine=0.9999999)}
    ctx = context(model, tmp_path, _feeds(8, seed=1), tolerances=strict)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True, "max_float_layers": 2})
    with pytest.raises(PassError, match="the accuracy loop kept every node float"):
        QuantizePass(cfg)(model, ctx)
