from __future__ import annotations

import math

import numpy as np

from compiler.core.parity import compare_outputs, judge, output_metrics
from compiler.core.tolerance import DEFAULT_TOLERANCES, Tolerance


def test_metrics_match_hand_computed_values() -> None:
    ref = np.array([[1.0, 2.0, 4.0]], np.float32)
    out = np.array([[1.5, 3.5, 3.0]], np.float32)
    m = output_metrics([out], [ref])
    assert m.max_abs_err == 1.5
    assert math.isclose(m.max_rel_err, 0.75)  # max(0.5/1, 1.5/2, 1/4)
    assert math.isclose(m.mean_abs_err, 1.0)  # (0.5 + 1.5 + 1) / 3
    cos = (1.5 * 1 + 3.5 * 2 + 3 * 4) / (math.sqrt(1.5**2 + 3.5**2 + 9) * math.sqrt(1 + 4 + 16))
    assert math.isclose(m.cosine, cos, rel_tol=1e-9)
    assert m.top1_agreement == 0.0  # argmax 2 vs 1
    assert m.top5_agreement == 1.0  # reference's top-1 is among the 3 candidates


def test_top1_counts_rows_over_samples() -> None:
    ref = [np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([[0.3, 0.7]])]
    out = [np.array([[0.2, 0.8], [0.4, 0.6]]), np.array([[0.1, 0.9]])]
    assert math.isclose(output_metrics(out, ref).top1_agreement, 2 / 3)


def test_non_class_outputs_have_no_topk() -> None:
    m = output_metrics([np.ones(5)], [np.ones(5)])
    assert m.top1_agreement is None and math.isclose(m.cosine, 1.0) and m.max_abs_err == 0.0


def test_judge_applies_atol_plus_rtol_and_cosine() -> None:
    tol = Tolerance(atol=0.1, rtol=0.1, min_cosine=0.9, min_top1=0.0)
    ref = np.array([10.0, 0.0])
    assert judge(output_metrics([np.array([11.0, 0.0])], [ref]), tol) == []  # 1.0 <= 0.1 + 1.0
    why = judge(output_metrics([np.array([11.2, 0.0])], [ref]), tol)
    assert why and why[0].startswith("max abs err 1.2")


def test_nan_fails_every_precision() -> None:
    m = output_metrics([np.array([np.nan, 1.0])], [np.array([1.0, 1.0])])
    assert "non-finite values (NaN/Inf) in the output" in judge(m, DEFAULT_TOLERANCES["int8"])


def test_compare_outputs_uses_per_output_tolerance() -> None:
    refs = [{"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0])}]
    outs = [{"a": np.array([1.0, 2.001]), "b": np.array([1.0, 2.001])}]
    loose = Tolerance(atol=0.01, rtol=0, min_cosine=0.9, min_top1=0)
    tight = Tolerance(atol=1e-6, rtol=0, min_cosine=0.9, min_top1=0)
    ok, per = compare_outputs(outs, refs, lambda name: loose if name == "a" else tight)
    assert not ok and per["a"].passed and not per["b"].passed
