"""Accuracy-aware int8: a model plain int8 breaks passes the gate after keeping layers in float."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx

from compiler.core.tolerance import DEFAULT_TOLERANCES
from passes.quantize import QuantizeConfig, QuantizePass
from tests.passes.builders import context, outlier_mlp, parity

INT8 = DEFAULT_TOLERANCES["int8"]


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (4, 16)).astype(np.float32)} for _ in range(count)]


def _quantize(model: onnx.ModelProto, tmp: Path, **aa: object):  # -> PassResult
    cfg = QuantizeConfig(mode="static", accuracy_aware=aa)
    return QuantizePass(cfg)(model, context(model, tmp, _feeds(8, seed=1)))


def test_plain_int8_fails_the_gate_on_the_outlier_model(tmp_path: Path) -> None:
    model = outlier_mlp()
    plain = _quantize(model, tmp_path, enabled=False).model
    m = parity(model, plain, _feeds(8, seed=2))["y"]
    assert m.cosine < INT8.min_cosine or m.top1_agreement < INT8.min_top1


def test_keeps_the_costly_layer_in_float_and_passes(tmp_path: Path) -> None:
    model = outlier_mlp()
    result = _quantize(model, tmp_path, enabled=True)
    aa = result.record["accuracy_aware"]
    assert aa["gate_before"]["passed"] is False
    assert aa["ranking"][0]["layer"] == "mm1"
    assert [k["layer"] for k in aa["kept_in_float"]] == ["mm1"]
    step = aa["kept_in_float"][0]
    assert step["gate_before"]["y"]["cosine"] < step["gate_after"]["y"]["cosine"]
    assert aa["gate_after"]["passed"] is True
    # still int8 where it does no harm, and within the gate on held-out data
    ops = {n.name: n for n in result.model.graph.node}
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    assert ops["mm1"].input[1] not in dq_outputs and ops["mm2"].input[1] in dq_outputs
    m = parity(model, result.model, _feeds(8, seed=2))["y"]
    assert m.cosine >= INT8.min_cosine and m.top1_agreement >= INT8.min_top1


def test_budget_spent_is_reported(tmp_path: Path) -> None:
    """A gate no int8 model can pass: the loop stops at the budget and says so."""
    result = _quantize(outlier_mlp(), tmp_path, enabled=True, max_float_layers=1, min_cosine=1.0)
    aa = result.record["accuracy_aware"]
    assert aa["gate_after"]["passed"] is False
    assert len(aa["kept_in_float"]) == 1
    assert "max_float_layers=1" in aa["budget_spent"]


def test_passing_model_keeps_everything_int8(tmp_path: Path) -> None:
    model = outlier_mlp(outlier=1.0)
    result = _quantize(model, tmp_path, enabled=True)
    aa = result.record["accuracy_aware"]
    assert aa["gate_before"]["passed"] is True and aa["kept_in_float"] == []


def test_gate_uses_the_build_tolerance_and_reference(tmp_path: Path) -> None:
    """With the DAG's context (tolerances, a reference), the gate reads both."""
    model = outlier_mlp(outlier=1.0)
    calls: list[int] = []

    def reference(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tests.passes.builders import run

        calls.append(1)
        return run(model, [feed])[0]

    strict = {"int8": dataclasses.replace(INT8, min_cosine=0.999999)}
    ctx = context(model, tmp_path, _feeds(8, seed=1), reference=reference, tolerances=strict)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True, "max_float_layers": 2})
    aa = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]
    assert calls, "the reference was not used"
    assert aa["gate_before"]["passed"] is False  # 0.999999 is stricter than int8 gets here
    assert "< 0.999999" in aa["gate_before"]["outputs"]["y"]["failures"][0]
