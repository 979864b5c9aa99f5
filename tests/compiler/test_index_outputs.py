"""Outputs that are indices (an ArgMax's class, a TopK's k best) are judged against the
reference's scores behind them: a flip between picks the reference scores alike is no
disagreement (compiler/pipeline/index_scores.py, compiler/core/parity.py). Found on MAGIKA
with a top-5 output appended: its int8 artifacts kept every top-1 pick and failed on "exact
agreement 0.275", the tail ranks (all near zero) in another order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compiler.core.parity import (
    GROSS_FLOOR,
    IndexScores,
    compare_outputs,
    departure,
    pack_scores,
    read_scores,
    unpack_scores,
)
from compiler.core.tolerance import DEFAULT_TOLERANCES
from compiler.packaging.reverify import verify_package
from compiler.pipeline.index_scores import index_scores, index_sources, scores_model
from tests.compiler.helpers import build
from tests.models import save, tiny_mlp

INT8 = DEFAULT_TOLERANCES["int8"]


def _picker(classes: int = 20, k: int = 3) -> onnx.ModelProto:
    """x[batch, 8] -> logits[batch, classes] -> TopK's indices (cast to int32) and ArgMax."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"]),
        helper.make_node("TopK", ["logits", "k"], ["values", "idx"], axis=1),
        helper.make_node("Cast", ["idx"], ["top"], to=TensorProto.INT32),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "picker",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [
            helper.make_tensor_value_info("top", TensorProto.INT32, ["batch", k]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("values", TensorProto.FLOAT, ["batch", k]),
        ],
        [
            numpy_helper.from_array(rng.normal(0, 1, (8, classes)).astype(np.float32), "w"),
            numpy_helper.from_array(np.asarray([k], np.int64), "k"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_index_outputs_are_found_through_order_keeping_ops() -> None:
    found = index_sources(_picker())
    assert set(found) == {"top", "label"}  # `values` is a float output
    assert (found["top"].scores, found["top"].axis, found["top"].topk) == ("logits", 1, True)
    assert (found["label"].scores, found["label"].axis, found["label"].topk) == (
        "logits",
        -1,
        False,
    )
    assert found["top"].largest and found["label"].largest


def _scores(p: np.ndarray, k: int) -> tuple[np.ndarray, IndexScores]:
    """The reference's top-k of probabilities `p` [rows, classes] and their IndexScores."""
    source = index_sources(_picker(p.shape[1], k))["top"]
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    found = index_scores(p, top, source)
    assert found is not None
    return top, found


def test_a_flip_between_picks_the_reference_scores_alike_is_no_disagreement() -> None:
    """Row 0: the tail ranks swapped (0.040 and 0.035: within top1_tie) agree as decisions;
    row 1: the reference's top pick (0.6) demoted below one it scores 0.25 is a flip."""
    p = np.asarray([[0.90, 0.04, 0.035, 0.02, 0.005], [0.1, 0.6, 0.25, 0.04, 0.01]])
    ref, scores = _scores(p, 3)
    assert ref.tolist() == [[0, 1, 2], [1, 2, 0]]
    got = np.asarray([[0, 2, 1], [2, 1, 0]])
    tol = lambda _name: INT8  # noqa: E731
    _, plain = compare_outputs([{"top": got}], [{"top": ref}], tol)
    assert plain["top"].agreement_decided is None and not plain["top"].passed
    _, judged = compare_outputs([{"top": got}], [{"top": ref}], tol, scores=[{"top": scores}])
    m = judged["top"]
    assert m.agreement == 2 / 6 and m.agreement_decided == 5 / 6
    assert not m.passed and m.failures[0].startswith("decided agreement 0.833 < 0.9 (flips")
    assert departure(m) == f"only 0.833 of its elements agree (< {GROSS_FLOOR})"
    _, same = compare_outputs(
        [{"top": got[:1]}], [{"top": ref[:1]}], tol, scores=[{"top": _scores(p[:1], 3)[1]}]
    )
    assert same["top"].passed and same["top"].agreement_decided == 1.0
    assert same["top"].checks[0].metric == "agreement_decided"


def test_scores_follow_the_picks_on_any_axis_and_logits_become_probabilities() -> None:
    """A TopK over axis 1 of [1, classes, 3] (per-position classes): each element of the
    indices is judged against its own position's scores; logits go through a softmax, so two
    logits 0.001 apart are a tie and 5 apart are not."""
    logits = np.zeros((1, 4, 3), np.float32)
    logits[0, :, 0] = [5.0, 0.0, 0.001, -1.0]  # position 0: class 0 decided, 2 ~ 1
    logits[0, :, 1] = [0.0, 5.0, 0.0, 0.0]
    logits[0, :, 2] = [0.0, 0.0, 0.0, 5.0]
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=1)],
            "axis1",
            [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 3])],
            [helper.make_tensor_value_info("i", TensorProto.INT64, [1, 2, 3])],
            [numpy_helper.from_array(np.asarray([2], np.int64), "k")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    source = index_sources(model)["i"]
    ref = np.argsort(-logits, axis=1, kind="stable")[:, :2, :]
    scores = index_scores(logits, ref, source)
    assert scores is not None and scores.probs.shape == (3, 4)
    tol = lambda _name: INT8  # noqa: E731
    tie = ref.copy()
    tie[0, 1, 0] = 1  # position 0's second pick: class 1 for class 2 (0.001 apart)
    _, m = compare_outputs([{"i": tie}], [{"i": ref}], tol, scores=[{"i": scores}])
    assert m["i"].agreement_decided == 1.0 and m["i"].agreement == 5 / 6
    flip = ref.copy()
    flip[0, 0, 2] = 0  # position 2's top pick: class 0 for class 3 (5 apart)
    _, m = compare_outputs([{"i": flip}], [{"i": ref}], tol, scores=[{"i": scores}])
    assert m["i"].agreement_decided == 5 / 6
    packed = unpack_scores(pack_scores([{"i": scores}]))
    assert np.array_equal(packed[0]["i"].rows, scores.rows)


def test_the_reference_model_returns_the_scores_it_picks_from() -> None:
    model = _picker()
    sources = index_sources(model)
    session = ort.InferenceSession(scores_model(model, sources).SerializeToString())
    x = np.random.default_rng(1).normal(0, 1, (2, 8)).astype(np.float32)
    logits, top = session.run(["logits", "top"], {"x": x})
    assert np.array_equal(top, np.argsort(-logits, axis=1)[:, :3])


def test_a_package_carries_the_scores_and_verify_judges_by_them(tmp_path: Path) -> None:
    """The build's reference writes the scores, the package ships them beside its outputs,
    and both the build's verdict and `compile-pkg verify` judge the index outputs by them;
    a model without index outputs gets none."""
    model = save(_picker(), tmp_path / "picker.onnx")
    built = build(model, tmp_path / "pkg", None, targets=("cpu",))
    scores = read_scores(built.package / "reference")
    assert scores is not None and set(scores[0]) == {"top", "label"}
    shipped = {p.name for p in (built.package / "reference").iterdir()}
    assert shipped == {"inputs.npz", "outputs.npz", "scores.npz", "model.onnx"}
    record = built.manifest.measured("cpu/ort-fp32").parity[-1]
    assert record.outputs["top"].agreement_decided == 1.0
    assert record.outputs["label"].agreement_decided == 1.0
    assert record.outputs["values"].agreement_decided is None
    checked = verify_package(built.package, measure_latency=False)
    again = [c for c in checked.artifacts if c.id == "cpu/ort-fp32"][0].parity
    assert again is not None and again.outputs["top"].agreement_decided == 1.0

    plain = build(save(tiny_mlp(), tmp_path / "mlp.onnx"), tmp_path / "mlp", None, ("cpu",))
    assert read_scores(plain.package / "reference") is None
