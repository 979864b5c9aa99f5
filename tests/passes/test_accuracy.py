"""Accuracy-aware int8: a model plain int8 breaks passes the gate after keeping layers in float;
the gate judges each output by its kind, and by the build's task metric when the samples have
labels."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from compiler.core.parity import compare_outputs, output_metrics
from compiler.core.tolerance import DEFAULT_TOLERANCES, TaskSpec, Tolerance
from compiler.pipeline.output_kinds import with_output_kinds
from passes.accuracy import Gates, SpeedFloor, make_gates
from passes.base import PassContext
from passes.ort_tools import relative_speed, simulates_int8
from passes.quantize import QuantizeConfig, QuantizePass
from tests.passes.builders import context, matmul_chain, outlier_lstm, outlier_mlp, run

INT8 = DEFAULT_TOLERANCES["int8"]
# a gate the outputs alone always pass: only the task decides
NO_PARITY = Tolerance(atol=None, rtol=None, min_cosine=-1, min_top1=0, max_rel_l2=None)


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (4, 16)).astype(np.float32)} for _ in range(count)]


def row_accuracy(outputs: list[dict[str, np.ndarray]], labels: list[list[int]]) -> float:
    """The task metric the tests name: top-1 accuracy over the rows of every sample."""
    hits = [
        o["y"].argmax(axis=1) == np.asarray(lab) for o, lab in zip(outputs, labels, strict=True)
    ]
    return float(np.concatenate(hits).mean())


TASK = TaskSpec(f"{__name__}:row_accuracy", max_drop=0.05)


def _quantize(model: onnx.ModelProto, tmp: Path, **aa: object):  # -> PassResult
    cfg = QuantizeConfig(mode="static", accuracy_aware=aa)
    return QuantizePass(cfg)(model, context(model, tmp, _feeds(8, seed=1)))


def _held_out_ok(model: onnx.ModelProto, quantized: onnx.ModelProto) -> bool:
    feeds = _feeds(8, seed=2)
    ok, _ = compare_outputs(run(quantized, feeds), run(model, feeds), lambda _n: INT8)
    return ok


def test_plain_int8_fails_the_gate_on_the_outlier_model(tmp_path: Path) -> None:
    model = outlier_mlp()
    assert not _held_out_ok(model, _quantize(model, tmp_path, enabled=False).model)


def test_keeps_the_costly_layer_in_float_and_passes(tmp_path: Path) -> None:
    model = outlier_mlp()
    result = _quantize(model, tmp_path, enabled=True)
    aa = result.record["accuracy_aware"]
    assert aa["gate_before"]["passed"] is False
    assert aa["ranking"][0]["layer"] == "mm1"
    assert [k["layer"] for k in aa["kept_in_float"]] == ["mm1"]
    step = aa["kept_in_float"][0]
    before, after = step["gate_before"]["outputs"]["y"], step["gate_after"]["outputs"]["y"]
    assert before["kind"] == "other" and before["cosine"] < after["cosine"]
    assert aa["gate_after"]["passed"] is True
    # still int8 where it does no harm, and within the gate on held-out data
    ops = {n.name: n for n in result.model.graph.node}
    dq_outputs = {n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"}
    assert ops["mm1"].input[1] not in dq_outputs and ops["mm2"].input[1] in dq_outputs
    assert _held_out_ok(model, result.model)


@pytest.mark.parametrize("source", ["user", "generated"])
def test_auto_searches_on_the_users_data_only(tmp_path: Path, source: str) -> None:
    """`enabled: auto` (the default pipeline's): the search runs where the calibration data is
    the user's and keeps the costly layer in float; on generated data it is off, says why,
    and every layer is int8 (the artifact is unverified there: nothing to fit a choice to)."""
    model = outlier_mlp()
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": "auto"})
    ctx = context(model, tmp_path, _feeds(8, seed=1), source=source)
    result = QuantizePass(cfg)(model, ctx)
    searched = "accuracy_aware" in result.record
    assert searched == (source == "user")
    assert ("accuracy_aware_off" in result.record) == (source == "generated")
    if searched:
        assert [k["layer"] for k in result.record["accuracy_aware"]["kept_in_float"]] == ["mm1"]
    else:
        assert "generated" in result.record["accuracy_aware_off"] and result.warnings
        dq_outputs = {
            n.output[0] for n in result.model.graph.node if n.op_type == "DequantizeLinear"
        }
        weights = [n.input[1] for n in result.model.graph.node if n.name in ("mm1", "mm2")]
        assert all(w in dq_outputs for w in weights)


def _sequences(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (6, 4, 8)).astype(np.float32)} for _ in range(count)]


def test_keeps_the_costly_lstm_in_float_under_dynamic_int8(tmp_path: Path) -> None:
    """A recurrent graph gets dynamic int8 (DynamicQuantizeLSTM); the loop may keep an LSTM
    in float, and keeps the one whose input one int8 scale cannot hold."""
    model = outlier_lstm()
    ops = lambda m: [n.op_type for n in m.graph.node]  # noqa: E731
    check = _sequences(8, seed=2)

    def held_out(quantized: onnx.ModelProto) -> bool:
        ok, _ = compare_outputs(run(quantized, check), run(model, check), lambda _n: INT8)
        return ok

    (tmp_path / "plain").mkdir()
    (tmp_path / "aa").mkdir()
    plain = QuantizePass(QuantizeConfig(mode="auto"))(
        model, context(model, tmp_path / "plain", _sequences(8, seed=1))
    )
    assert plain.record["mode"] == "dynamic"
    assert ops(plain.model).count("DynamicQuantizeLSTM") == 2 and not held_out(plain.model)

    cfg = QuantizeConfig(mode="auto", accuracy_aware={"enabled": True})
    result = QuantizePass(cfg)(model, context(model, tmp_path / "aa", _sequences(8, seed=1)))
    aa = result.record["accuracy_aware"]
    assert aa["ranking"][0] == {**aa["ranking"][0], "layer": "lstm1", "op_type": "LSTM"}
    assert [k["layer"] for k in aa["kept_in_float"]] == ["lstm1"]
    assert aa["gate_after"]["passed"] is True
    nodes = {n.name: n.op_type for n in result.model.graph.node}
    assert nodes["lstm1"] == "LSTM" and "DynamicQuantizeLSTM" in nodes.values()
    assert held_out(result.model)


def test_the_reduce_range_variant_reads_the_ranking_the_first_made(tmp_path: Path) -> None:
    """ort-int8 and ort-int8-rr rank layers alike (8-bit weights): with a shared folder the
    ranking is made once, and the rr node's result is the one it makes alone; each node
    still judges its steps with its own weights."""
    model, store = outlier_mlp(), tmp_path / "shared"
    store.mkdir()

    def quantize(reduce_range: bool, shared: Path | None):  # -> PassResult
        work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
        work.mkdir()
        cfg = QuantizeConfig(
            mode="static",
            reduce_range=reduce_range,
            # one calibration method: the nodes rank alike only where they choose alike
            accuracy_aware={"enabled": True, "calibration_methods": []},
        )
        return QuantizePass(cfg)(model, context(model, work, _feeds(8, seed=1), shared=shared))

    first = quantize(False, store)
    assert len(list(store.glob("int8-ranking-*.json"))) == 1
    rr = quantize(True, store)
    assert len(list(store.glob("int8-ranking-*.json"))) == 1  # read, not made again
    ranked = [r["layer"] for r in rr.record["accuracy_aware"]["ranking"]]
    assert ranked == [r["layer"] for r in first.record["accuracy_aware"]["ranking"]]
    assert ranked[0] == "mm1" and rr.record["accuracy_aware"]["gate_after"]["passed"]
    alone = quantize(True, None)
    assert rr.model.SerializeToString(deterministic=True) == alone.model.SerializeToString(
        deterministic=True
    )


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
        calls.append(1)
        return run(model, [feed])[0]

    strict = {"int8": dataclasses.replace(INT8, min_cosine=0.999999)}
    ctx = context(model, tmp_path, _feeds(8, seed=1), reference=reference, tolerances=strict)
    # one layer at most: with both MatMuls float nothing int8 would be left (a PassError)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True, "max_float_layers": 1})
    aa = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]
    assert calls, "the reference was not used"
    assert aa["gate_before"]["passed"] is False  # 0.999999 is stricter than int8 gets here
    assert "< 0.999999" in aa["gate_before"]["outputs"]["y"]["failures"][0]


def _ctx(model: onnx.ModelProto, tmp: Path, **kw: Any) -> PassContext:
    """A context whose contract says y is class scores (as normalize infers for a MatMul head)."""
    contract = with_output_kinds(context(model, tmp).contract, model, {"y": "class_scores"})
    calibration = _feeds(8, seed=1)
    return PassContext(
        contract=contract, workdir=tmp, target="cpu", calibration=lambda: calibration, **kw
    )


def test_gate_judges_class_scores_by_decided_top1(tmp_path: Path) -> None:
    """Per-output tolerances reach the gate, and class scores are judged by top-1 alone."""
    model = outlier_mlp(outlier=1.0)
    strict = {"y": {"int8": dataclasses.replace(INT8, min_top1=1.0, min_cosine=1.0)}}
    ctx = _ctx(model, tmp_path, output_tolerances=strict)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True})
    gate = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]["gate_before"]
    y = gate["outputs"]["y"]
    assert y["kind"] == "class_scores" and set(y) >= {"top1_decided", "cosine"}
    assert "rel_l2" not in y and all("cosine" not in f for f in y["failures"])


def _task_ctx(
    model: onnx.ModelProto, tmp: Path, samples: list[dict[str, np.ndarray]]
) -> PassContext:
    """A context whose samples are labelled with the float model's own answers, judged by
    the task alone (outputs within any bound)."""
    labels = [o["y"].argmax(axis=1).tolist() for o in run(model, samples)]
    return _ctx(
        model, tmp, tolerances={"int8": NO_PARITY}, task=TASK,
        validation=lambda: samples, labels=lambda: labels,
    )  # fmt: skip


def test_task_metric_decides_the_loop(tmp_path: Path) -> None:
    """Outputs alone would pass anything here; the labelled task fails plain int8 (most rows
    flip) and passes once the outlier layer is float. Plain int8 is judged on all 16 labelled
    samples; the loop chooses on the first half only: the verdict's other half is held out
    from it."""
    model = outlier_mlp()
    samples = _feeds(16, seed=2)
    ctx = _task_ctx(model, tmp_path, samples)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True})
    aa = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]
    before = aa["gate_before"]
    assert before["passed"] is False and before["outputs"]["y"]["failures"] == []
    assert before["task"]["status"] == "failed" and before["task"]["reference"] == 1.0
    assert [k["layer"] for k in aa["kept_in_float"]] == ["mm1"]
    after = aa["gate_after"]["task"]
    assert aa["gate_after"]["passed"] is True and after["drop"] <= TASK.max_drop
    # plain int8 is judged on all 16 (as its verdict will be), the search on the first 8
    assert before["task"]["samples"] == 16 and after["samples"] == 8


def test_the_search_chooses_on_the_last_half_where_plain_int8_passes_the_first(
    tmp_path: Path,
) -> None:
    """Plain int8 fails on all 16 labelled samples but passes on the first 8 (inputs of zero,
    which int8 computes as well as float): the search chooses on the last 8, where it fails,
    and holds the first 8 out for the verdict; the record says which half and why."""
    model = outlier_mlp()
    samples = [{"x": np.zeros((4, 16), np.float32)} for _ in range(8)] + _feeds(8, seed=2)
    ctx = _task_ctx(model, tmp_path, samples)
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True})
    aa = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]
    assert aa["gate_before"]["passed"] is False and aa["gate_before"]["task"]["samples"] == 16
    assert "unsearched" not in aa
    assert "passes on the first 8: the search chose on the last 8" in aa["searched_on"]
    assert [k["layer"] for k in aa["kept_in_float"]] == ["mm1"]
    assert aa["gate_after"]["passed"] is True and aa["gate_after"]["task"]["samples"] == 8


def test_no_search_where_plain_int8_passes_every_half_a_search_could_choose_on(
    tmp_path: Path,
) -> None:
    """Where the unchanged model fails the whole set but passes on the samples a search could
    choose on, no change there can look better: no search, and the check says why."""
    model = outlier_mlp()
    zeros = [{"x": np.zeros((4, 16), np.float32)} for _ in range(8)]
    samples = zeros + _feeds(8, seed=2)
    gates = make_gates(model, _task_ctx(model, tmp_path, samples), samples)
    assert gates.rest is not None and len(gates.rest.feeds) == 8
    plain = QuantizePass(QuantizeConfig(mode="static"))(model, _ctx(model, tmp_path)).model
    check = gates.first_check(plain)
    assert not check.whole.passed and check.gate is gates.rest and not check.blind
    # the same gates with no other half to choose on
    halves = Gates(gates.whole, gates.search)
    check = halves.first_check(plain)
    assert not check.whole.passed and check.result.passed and check.gate is gates.search
    assert "passes on the first 8 a search chooses on: nothing to choose by" in check.blind


def test_a_backends_judge_chooses_the_half_where_the_build_fails(tmp_path: Path) -> None:
    """The judge a compile node hands a backend (OpenVINO's bf16 f32-layer search) picks its
    share as the int8 searches do: the first half where the unchanged build fails there, else
    the last half, else none."""
    from compiler.pipeline.nodes.compile import _GateJudge
    from passes.ort_tools import run_model

    model = outlier_mlp()
    zeros = [{"x": np.zeros((4, 16), np.float32)} for _ in range(8)]
    samples = zeros + _feeds(8, seed=2)
    gates = make_gates(model, _task_ctx(model, tmp_path, samples), samples)
    plain = QuantizePass(QuantizeConfig(mode="static"))(model, _ctx(model, tmp_path)).model
    outputs = run_model(plain, samples)
    judge = _GateJudge(gates)
    assert not judge(outputs).passed
    share = judge.share(outputs)
    assert share is not None and (share.start, share.stop, share.where) == (8, 16, "the last 8")
    assert not share.judge(outputs[8:]).passed
    assert share.judge(run_model(model, samples[8:])).passed  # the float model passes there
    assert _GateJudge(Gates(gates.whole, gates.search)).share(outputs) is None
    swapped = _feeds(8, seed=2) + zeros
    first = _GateJudge(make_gates(model, _task_ctx(model, tmp_path, swapped), swapped))
    share = first.share(run_model(plain, swapped))
    assert share is not None and (share.start, share.stop, share.where) == (0, 8, "the first 8")


def test_a_spent_time_budget_stops_the_search_and_says_so(tmp_path: Path) -> None:
    """max_seconds caps the search after plain int8's check: with no time left no step
    starts (no other calibration, no arithmetic step, no ranking), plain int8 stays, and
    the record says where it stopped and that the result depends on the host's speed."""
    model = outlier_mlp()
    ctx = _task_ctx(model, tmp_path, _feeds(16, seed=2))
    aa_cfg = {"enabled": True, "max_seconds": 1e-9}
    aa = QuantizePass(QuantizeConfig(mode="static", accuracy_aware=aa_cfg))(model, ctx).record[
        "accuracy_aware"
    ]
    assert aa["gate_before"]["passed"] is False and aa["kept_in_float"] == []
    assert "before ranking layers" in aa["budget_spent"] and "max_seconds" in aa["budget_spent"]
    assert aa["quantizer"]["tried"]["percentile"] == {"skipped": "max_seconds spent"}
    assert aa["arithmetic_float"] == {"skipped": "max_seconds spent"} and "ranking" not in aa


def test_task_without_labels_is_noted_and_the_outputs_judge(tmp_path: Path) -> None:
    model = outlier_mlp(outlier=1.0)
    ctx = _ctx(model, tmp_path, task=TASK, validation=lambda: _feeds(4, seed=2))
    cfg = QuantizeConfig(mode="static", accuracy_aware={"enabled": True})
    aa = QuantizePass(cfg)(model, ctx).record["accuracy_aware"]
    assert "no labels" in aa["note"] and "task" not in aa["gate_before"]
    assert aa["gate_before"]["passed"] is True


def test_nncf_accuracy_control_restores_the_task(tmp_path: Path) -> None:
    """NNCF's accuracy control searches with the gate's margin, the task's included."""
    pytest.importorskip("nncf")
    from passes.nncf import NncfConfig, NncfPass

    model = outlier_mlp()
    samples = _feeds(16, seed=2)
    ctx = _task_ctx(model, tmp_path, samples)
    cfg = NncfConfig(accuracy_control={"enabled": True, "max_iterations": 4})
    ac = NncfPass(cfg)(model, ctx).record["accuracy_control"]
    assert ac["gate_before"]["task"]["status"] == "failed"
    assert ac["gate_after"]["passed"] is True, ac["gate_after"]
    assert "mm1" in ac["kept_in_float"]


def test_nncf_accuracy_control_stops_when_its_time_is_spent(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    from passes.nncf import NncfConfig, NncfPass

    model = outlier_mlp()
    ctx = _task_ctx(model, tmp_path, _feeds(16, seed=2))
    cfg = NncfConfig(accuracy_control={"enabled": True, "max_seconds": 1e-9})
    ac = NncfPass(cfg)(model, ctx).record["accuracy_control"]
    assert ac["gate_after"]["passed"] is False
    assert "in NNCF's accuracy control" in ac["budget_spent"]


def _deep_mlp(layers: int, seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> (MatMul -> Tanh) x layers -> y: layer i's weights have one outlier column
    of its own size, so each layer costs a different amount in int8."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.normal(0, 1, (16, 16)) / 4).astype(np.float32)
        w[:, i % 16] *= 1.0 + 40.0 * rng.random()
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"], name=f"mm{i:02d}"))
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"t{i}"], name=f"tanh{i:02d}"))
        prev = f"t{i}"
    nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes,
        "deep",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _minmax_quantizer(model: onnx.ModelProto, tmp: Path) -> Any:  # -> Quantize
    """ONNX Runtime's static int8 of `model` (per channel, u8/s8, min/max ranges calibrated
    on 8 feeds) as the accuracy loops call it."""
    from passes.ort_quantizers import OrtSettings, static_quantizer

    settings = OrtSettings((), True, False, 99.999)
    return static_quantizer(
        model, _feeds(8, seed=1), settings, ("u8", "s8", False), tmp, "minmax", None
    )


def test_many_candidates_are_ranked_in_two_rounds_with_the_same_leaders(tmp_path: Path) -> None:
    """Beyond 32 candidates, every layer runs on half the ranking samples and the 32 that
    cost the most on all of them: the finalists' errors are the all-sample figures exactly, and the
    leaders (what the loop tries) are those of ranking every layer on every sample."""
    from passes.accuracy import Gate, candidate_layers, rank_layers
    from passes.ort_tools import run_model

    model = _deep_mlp(40)
    feeds = _feeds(8, seed=3)
    gate = Gate(INT8, feeds, run_model(model, feeds))
    quantize = _minmax_quantizer(model, tmp_path)
    runs: list[int] = []  # samples each quantized model ran on, counted through the gate's feeds

    def counted(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
        runs.append(0)
        return quantize(exclude, only)

    candidates = candidate_layers(model, ["MatMul"], [])
    assert len(candidates) == 40
    ranked = rank_layers(candidates, counted, gate, 8)
    assert len(runs) == 40 + 32  # the finalists quantized again for their other 4 samples

    def _error(outputs: list[Any], references: list[Any], _tolerance: object) -> float:
        """The ranking metric, from compiler.core.parity's metrics (passes/accuracy.py makes
        it from squared sums): the L2 error over the reference's RMS, averaged over outputs."""
        errs = []
        for name in references[0]:
            m = output_metrics([o[name] for o in outputs], [r[name] for r in references])
            errs.append(m.err_rms / max(m.ref_rms, INT8.atol or 0.0, 1e-30))
        return float(np.mean(errs))

    every = sorted(
        (
            (n, t, _error(run_model(quantize([], [n]), feeds), gate.references, gate.tolerance))
            for n, t in candidates
        ),
        key=lambda s: (-s[2], s[0]),
    )
    assert [r[0] for r in ranked[:16]] == [r[0] for r in every[:16]]
    assert sorted(r[0] for r in ranked) == sorted(n for n, _ in candidates)
    all_samples = {n: e for n, _, e in every}
    for name, _, err in ranked[:32]:
        assert err == pytest.approx(all_samples[name], rel=1e-9)
    first_round = {
        n: _error(run_model(quantize([], [n]), feeds[:4]), gate.references[:4], gate.tolerance)
        for n, _, _ in ranked[32:]
    }
    for name, _, err in ranked[32:]:
        assert err == pytest.approx(first_round[name], rel=1e-9)


def test_a_quantizer_call_made_before_is_read_back_not_quantized_again(tmp_path: Path) -> None:
    """The ranking's finalists come back with the same call: the quantizer reads the model it
    wrote then (the same bytes), and ONNX Runtime quantizes only calls it has not seen."""
    model = _deep_mlp(6)
    quantize = _minmax_quantizer(model, tmp_path)

    def written() -> list[str]:
        return sorted(p.name for p in tmp_path.glob("q-minmax-*.onnx"))

    first = quantize([], ["mm02"])
    assert written() == ["q-minmax-1.onnx"]
    again = quantize([], ["mm02"])
    assert written() == ["q-minmax-1.onnx"]
    assert again.SerializeToString() == first.SerializeToString()
    assert again is not first  # a caller's edits to one never reach the other
    other = quantize([], ["mm03"])
    whole = quantize(["mm02"], None)
    assert written() == ["q-minmax-1.onnx", "q-minmax-2.onnx", "q-minmax-3.onnx"]
    assert other.SerializeToString() != first.SerializeToString()
    dq = [n for n in whole.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) > len([n for n in first.graph.node if n.op_type == "DequantizeLinear"])


def _loop_with_and_without_ceiling(tmp_path: Path, layers: int, min_cosine: float) -> list[Any]:
    """keep_sensitive_layers_in_float on a Tanh chain of `layers` under the default ceiling
    check and with none: per run, the quantizations it made and its record."""
    from passes.accuracy import AccuracyAwareConfig, Gate, keep_sensitive_layers_in_float
    from passes.ort_tools import run_model

    model = _deep_mlp(layers)
    feeds = _feeds(8, seed=3)
    gate = Gate(dataclasses.replace(INT8, min_cosine=min_cosine), feeds, run_model(model, feeds))
    quantize = _minmax_quantizer(model, tmp_path)
    calls: list[int] = []

    def counted(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
        calls.append(0)
        return quantize(exclude, only)

    runs = []
    for ceiling_after in (3, None):
        before = len(calls)
        cfg = AccuracyAwareConfig(enabled=True, ceiling_after=ceiling_after)
        _, record = keep_sensitive_layers_in_float(
            model, quantize([], None), counted, gate, [], cfg
        )
        runs.append((len(calls) - before, record))
    return runs


def _steps(record: dict[str, Any]) -> list[str]:
    tried = {s["layer"] for s in (*record["kept_in_float"], *record["rejected"])}
    return [r["layer"] for r in record["ranking"] if r["layer"] in tried]


def test_the_loop_stops_when_every_layer_it_could_give_back_still_fails(tmp_path: Path) -> None:
    """After 3 steps the loop checks once the most it can still reach (the kept layers and
    all 13 it has yet to try in float); under a gate nothing quantized passes, that fails,
    and the loop stops: 20 rankings + 3 steps + 1 check, not 20 + 16, with the same first
    steps and the same failing verdict as the loop that tries all 16."""
    (stopped_calls, stopped), (full_calls, full) = _loop_with_and_without_ceiling(tmp_path, 20, 1.0)
    assert full_calls == 20 + 16 and full["gate_after"]["passed"] is False
    assert stopped_calls == 20 + 3 + 1
    assert stopped["ceiling"] == {**stopped["ceiling"], "untried": 13, "passed": False}
    assert _steps(stopped) == _steps(full)[:3]
    assert stopped["gate_after"]["passed"] is False
    assert "stopped" in stopped["budget_spent"] and "13 ranked layers" in stopped["budget_spent"]


def test_the_loop_goes_on_where_the_ceiling_passes(tmp_path: Path) -> None:
    """Where the kept and the untried layers in float pass the gate, the check costs one
    quantization and the loop makes exactly the steps it makes without the check: on an
    8-layer chain it passes at its fifth step either way."""
    (checked_calls, checked), (full_calls, full) = _loop_with_and_without_ceiling(tmp_path, 8, 0.8)
    assert checked["ceiling"]["passed"] is True and checked["ceiling"]["margin"] > 0.1
    assert full["gate_after"]["passed"] is True and len(_steps(full)) > 3
    assert checked_calls == full_calls + 1
    assert _steps(checked) == _steps(full)
    assert [k["layer"] for k in checked["kept_in_float"]] == [
        k["layer"] for k in full["kept_in_float"]
    ]
    assert checked["gate_after"] == full["gate_after"]


@pytest.mark.parametrize("floor", [1000.0, None])
def test_a_search_starts_only_on_an_int8_model_faster_than_float(
    tmp_path: Path, floor: float | None
) -> None:
    """min_speedup: where the target is this host's (target_isa) and its int8 kernels run
    natively, plain int8 slower than min_speedup times its float model is judged as it is, no
    search run (a search only gives layers back to float). 1000x is out of any int8 model's
    reach, so the floor stops it on every such host; null never checks. Where the host's
    int8 kernels may saturate, the search runs unfused Q/DQ, whose speed says nothing: the
    floor is not checked there and the search runs."""
    model = outlier_mlp()
    ctx = context(model, tmp_path, _feeds(8, seed=1), target_isa=("avx2",))
    aa_cfg = {"enabled": True, "min_speedup": floor}
    aa = QuantizePass(QuantizeConfig(mode="static", accuracy_aware=aa_cfg))(model, ctx).record[
        "accuracy_aware"
    ]
    assert aa["gate_before"]["passed"] is False
    if floor is not None and not simulates_int8():
        speed = aa["speed"]
        assert 0 < speed["speedup"] < floor and speed["pairs"] >= 3
        assert "as first quantized" in speed["stopped"] and "min_speedup 1000" in speed["stopped"]
        assert aa["kept_in_float"] == [] and "ranking" not in aa and "arithmetic_float" not in aa
    else:
        assert "speed" not in aa
        assert [k["layer"] for k in aa["kept_in_float"]] == ["mm1"]


def test_the_speed_floor_is_not_checked_for_a_target_of_another_architecture(
    tmp_path: Path,
) -> None:
    """No target_isa (an arm or gpu target built here): this host's int8 speed says nothing
    of the target's, so even an unreachable floor leaves the search to run."""
    model = outlier_mlp()
    ctx = context(model, tmp_path, _feeds(8, seed=1), target="arm")
    aa_cfg = {"enabled": True, "min_speedup": 1000.0}
    aa = QuantizePass(QuantizeConfig(mode="static", accuracy_aware=aa_cfg))(model, ctx).record[
        "accuracy_aware"
    ]
    assert "speed" not in aa and aa["ranking"]


def test_the_speed_floor_reads_a_real_timing_against_the_float_model() -> None:
    """SpeedFloor.below on relative_speed itself: a model that does 1/16 of its float
    model's work clears a 1.1 floor (None: the search goes on); sixteen times the work falls
    under it, and the record says what was measured and where the search stopped."""
    feed = {"x": np.random.default_rng(1).normal(0, 1, (64, 256)).astype(np.float32)}
    one, sixteen = matmul_chain(1), matmul_chain(16)
    assert SpeedFloor(1.1, lambda m: relative_speed(m, sixteen, feed, 0.05)).below(one, "x") is None
    stop = SpeedFloor(1.1, lambda m: relative_speed(m, one, feed, 0.05)).below(
        sixteen, "the int8 model its coarse steps found"
    )
    assert stop is not None and stop["speedup"] < 1.1 and stop["pairs"] >= 3
    assert stop["stopped"].startswith("the int8 model its coarse steps found runs ")
    assert "under min_speedup 1.1" in stop["stopped"]
