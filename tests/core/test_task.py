"""The task metric hook: score_task compares the artifact's task score with the reference's on
the same labelled samples; a metric that cannot run here leaves the verdict to the outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.core.task import load_callable, score_task
from compiler.core.tolerance import TaskSpec


def accuracy(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
    """Top-1 accuracy of the only output (module-level: the tests import it by name)."""
    return float(
        np.mean([int(o["y"].argmax()) == label for o, label in zip(outputs, labels, strict=True)])
    )


def _outs(*picks: int) -> list[dict[str, np.ndarray]]:
    return [{"y": np.eye(3)[p][None]} for p in picks]


SPEC = TaskSpec(f"{__name__}:accuracy", max_drop=0.0)


def test_drop_within_max_drop_passes() -> None:
    refs, labels = _outs(0, 1, 2, 2), [0, 1, 2, 1]  # the reference gets 3 of 4
    same = score_task(SPEC, _outs(0, 1, 2, 2), refs, labels, accuracy)
    assert (same.status, same.reference, same.artifact, same.drop) == ("passed", 0.75, 0.75, 0)
    better = score_task(SPEC, _outs(0, 1, 2, 1), refs, labels, accuracy)
    assert better.status == "passed" and better.drop == -0.25
    worse = score_task(SPEC, _outs(1, 1, 2, 2), refs, labels, accuracy)
    assert worse.status == "failed" and worse.drop == 0.25
    assert worse.reason.startswith("task score 0.5 vs reference 0.75: drop 0.25 > max_drop 0.0;")
    assert worse.worse == (0,) and "samples 0;" in worse.reason
    allowed = TaskSpec(SPEC.metric, max_drop=0.25)
    assert score_task(allowed, _outs(1, 1, 2, 2), refs, labels, accuracy).status == "passed"


def test_lower_is_better() -> None:
    def error_rate(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
        return 1.0 - accuracy(outputs, labels)

    spec = TaskSpec("m:error_rate", max_drop=0.1, higher_is_better=False)
    refs, labels = _outs(0, 1, 2, 2), [0, 1, 2, 1]
    got = score_task(spec, _outs(1, 1, 2, 2), refs, labels, error_rate)
    assert got.status == "failed" and got.drop == pytest.approx(0.25)


def test_loads_the_metric_by_module_and_by_file(tmp_path: Path) -> None:
    refs, labels = _outs(0, 1), [0, 1]
    assert score_task(SPEC, refs, refs, labels).status == "passed"  # module:function
    script = tmp_path / "my_metric.py"
    script.write_text("def score(outputs, labels):\n    return float(len(labels))\n")
    got = score_task(TaskSpec(f"{script}:score"), refs, refs, labels)
    assert got.status == "passed" and got.reference == 2.0
    assert load_callable(f"{script}:score").__name__ == "score"


def test_not_run_leaves_the_verdict_to_the_outputs() -> None:
    refs = _outs(0, 1)
    no_labels = score_task(SPEC, refs, refs, None, accuracy)
    assert no_labels.status == "not-run" and "no labels" in no_labels.reason
    short = score_task(SPEC, refs, refs, [0], accuracy)
    assert short.status == "not-run" and short.reason == "1 labels for 2 samples"
    missing = score_task(TaskSpec("no_such_module_here:f"), refs, refs, [0, 1])
    assert missing.status == "not-run" and "ModuleNotFoundError" in missing.reason


def test_a_metric_that_raises_on_the_artifact_fails_it() -> None:
    def picky(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
        if any(np.isnan(o["y"]).any() for o in outputs):
            raise ValueError("NaN scores")
        return 1.0

    refs = _outs(0, 1)
    nan = [{"y": np.full((1, 3), np.nan)}, *refs[1:]]
    got = score_task(SPEC, nan, refs, [0, 1], picky)
    assert got.status == "failed" and got.reason == "metric failed: ValueError: NaN scores"


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="expected module:function"):
        TaskSpec("accuracy")
    with pytest.raises(ValueError, match="max_drop must be >= 0"):
        TaskSpec("m:f", max_drop=-0.1)
    with pytest.raises(ValueError, match="is not a function"):
        load_callable(f"{__name__}:SPEC")
    with pytest.raises(ValueError, match="cannot import"):
        load_callable(f"{__name__}:nothing")


def test_a_gain_does_not_make_up_for_a_loss() -> None:
    """Ties in total, but sample 0 is now wrong (sample 3's gain is luck): failed, saying
    which sample; the old totals-only rule passed it."""
    refs, labels = _outs(0, 1, 2, 2), [0, 1, 2, 1]
    got = score_task(SPEC, _outs(1, 1, 2, 1), refs, labels, accuracy)
    assert (got.reference, got.artifact, got.drop) == (0.75, 0.75, 0.0)
    assert got.status == "failed"
    assert (got.worse, got.better, got.loss_drop) == ((0,), 1, 0.25)
    assert got.reason == (
        "1 of 4 samples do worse than the reference (samples 0; 1 do better, which does not "
        "make up for them): drop 0.25 on those > max_drop 0.0"
    )
    # a user who allows a drop of one item in four gets what they allowed
    allowed = score_task(TaskSpec(SPEC.metric, max_drop=0.25), _outs(1, 1, 2, 1), refs, labels)
    assert allowed.status == "passed" and allowed.worse == (0,)


def recall_at_1(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
    """Each sample's nearest other sample (cosine) must be its labelled partner: a metric
    across samples, which a per-sample score could not judge."""
    e = np.stack([o["e"].reshape(-1) for o in outputs])
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(sim.argmax(axis=1) == np.asarray(labels)))


def test_the_paired_check_works_for_a_metric_across_samples() -> None:
    rng = np.random.default_rng(0)
    pairs = [rng.normal(size=8) for _ in range(3)]
    refs = [{"e": v + 0.01 * rng.normal(size=8)} for v in pairs for _ in range(2)]
    labels = [1, 0, 3, 2, 5, 4]
    spec = TaskSpec(f"{__name__}:recall_at_1")
    assert score_task(spec, refs, refs, labels).reference == 1.0
    outs = [dict(r) for r in refs]
    outs[4] = {"e": pairs[0]}  # the artifact maps sample 4 next to the first pair
    got = score_task(spec, outs, refs, labels)
    assert got.status == "failed" and 4 in (got.worse or ()) and got.loss_drop > 0
    close = [{"e": r["e"] * 1.001} for r in refs]  # a scaled embedding ranks the same
    assert score_task(spec, close, refs, labels).worse == ()


def test_the_paired_check_can_be_left_out_and_says_so() -> None:
    refs, labels = _outs(0, 1, 2, 2), [0, 1, 2, 1]
    got = score_task(SPEC, _outs(1, 1, 2, 1), refs, labels, accuracy, paired_budget_s=0)
    assert got.status == "passed" and got.worse is None  # the totals alone tie
    assert got.paired_reason == "not run: no time budget for it"
    one = score_task(SPEC, _outs(0), _outs(0), [0], accuracy)
    assert one.status == "passed" and one.paired_reason.startswith("one sample")


def mask_iou(outputs: list[dict[str, np.ndarray]], labels: list[np.ndarray]) -> float:
    """Mean IoU of the map thresholded at 0.5 with the labelled mask (a detector's job)."""
    ious = []
    for out, label in zip(outputs, labels, strict=True):
        mask = out["map"] > 0.5
        ious.append((mask & label).sum() / max((mask | label).sum(), 1))
    return float(np.mean(ious))


def _maps(count: int, seed: int = 0) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
    """Near-binary probability maps of square regions (as a text detector's sigmoid output)
    and their masks."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for _ in range(count):
        logits = np.full((32, 32), -6.0)
        y, x = rng.integers(4, 20, size=2)
        logits[y : y + 8, x : x + 8] = 6.0
        maps.append({"map": (1 / (1 + np.exp(-logits)))[None].astype(np.float32)})
        masks.append(maps[-1]["map"][0] > 0.5)
    return maps, masks


def _judged(outs, refs, labels, precision: str):  # type: ignore[no-untyped-def]
    from compiler.core.parity import compare_outputs
    from compiler.core.tolerance import DEFAULT_TOLERANCES

    spec = TaskSpec(f"{__name__}:mask_iou", max_drop=0.0)
    _, per_output = compare_outputs(
        outs, refs, lambda _n: DEFAULT_TOLERANCES[precision], {"map": "dense_map"}
    )
    task = score_task(spec, outs, refs, labels, mask_iou)
    return per_output, task


def test_the_task_decides_a_lossy_map_that_moved_at_its_borders() -> None:
    """A probability map whose region borders soften (0.9 -> 0.55) is far outside int8's
    L2 bound and finds the same regions: a lossy artifact passes on the task, says why, and
    keeps its outputs' failures on record; fp32, too few samples, a task loss or a gross
    departure fail it."""
    from compiler.core.task import TASK_DECIDES_MIN_SAMPLES, verdict

    refs, labels = _maps(TASK_DECIDES_MIN_SAMPLES)
    soft = []
    for ref in refs:
        m = ref["map"].copy()
        m[m > 0.5] = 0.55  # still above the threshold everywhere
        soft.append({"map": m})
    per_output, task = _judged(soft, refs, labels, "int8")
    assert not per_output["map"].passed and "L2 error" in per_output["map"].failures[0]
    assert task.status == "passed" and task.worse == ()
    passed, basis = verdict(per_output, task, "int8")
    assert passed and basis.startswith("decided by the task metric: on 8 labelled samples")
    assert "outside the int8 closeness bounds (map: L2 error" in basis

    assert verdict(*_judged(soft, refs, labels, "fp32")[:2], "fp32") == (False, "")
    few = TASK_DECIDES_MIN_SAMPLES - 1
    assert verdict(*_judged(soft[:few], refs[:few], labels[:few], "int8"), "int8") == (False, "")

    lost = [dict(s) for s in soft]
    lost[3] = {"map": np.zeros_like(soft[3]["map"])}  # one sample's region missed
    assert verdict(*_judged(lost, refs, labels, "int8"), "int8") == (False, "")

    hazy = [{"map": np.where(r["map"] > 0.5, r["map"], 0.45).astype(np.float32)} for r in refs]
    per_output, task = _judged(hazy, refs, labels, "int8")  # background 0 -> 0.45
    assert task.status == "passed" and per_output["map"].cosine < 0.9
    assert verdict(per_output, task, "int8") == (False, "")


def mean_iou_of_all(outputs: list[dict[str, np.ndarray]], labels: list[np.ndarray]) -> float:
    """mask_iou reading its output as many metrics do: the only value, whatever its name."""
    return mask_iou([{"map": next(iter(o.values()))} for o in outputs], labels)


def test_the_task_decides_only_the_outputs_its_metric_reads() -> None:
    """A face landmarker's task metric reads its presence flag, not its landmarks. Where the
    flag's map moved outside int8's bounds and the task holds, the task decides the flag; the
    landmarks keep their own bounds: moved by up to 50 % they fail the artifact, within int8's error
    they pass it and the reason says the task does not read them. A metric that iterates over
    an artifact's outputs reads them all."""
    from compiler.core.parity import compare_outputs
    from compiler.core.task import TASK_DECIDES_MIN_SAMPLES, verdict
    from compiler.core.tolerance import DEFAULT_TOLERANCES

    refs, labels = _maps(TASK_DECIDES_MIN_SAMPLES)
    rng = np.random.default_rng(1)
    for ref in refs:
        ref["points"] = rng.uniform(10, 190, size=(1, 936)).astype(np.float32)
    soft = []
    for ref in refs:
        m = ref["map"].copy()
        m[m > 0.5] = 0.55  # outside int8's L2 bound, the same regions found
        soft.append({"map": m, "points": ref["points"] * rng.uniform(0.5, 1.5, size=(1, 936))})

    def judged(outs, metric):  # type: ignore[no-untyped-def]
        kinds = {"map": "dense_map", "points": "other"}
        tol = lambda _n: DEFAULT_TOLERANCES["int8"]  # noqa: E731
        _, per_output = compare_outputs(outs, refs, tol, kinds)
        spec = TaskSpec(f"{__name__}:{metric.__name__}", max_drop=0.0)
        return per_output, score_task(spec, outs, refs, labels, metric)

    per_output, task = judged(soft, mask_iou)
    assert task.status == "passed" and task.read == ("map",)
    assert not per_output["map"].passed and not per_output["points"].passed
    assert verdict(per_output, task, "int8") == (False, "")

    close = [{**s, "points": r["points"] * 1.001} for s, r in zip(soft, refs, strict=True)]
    per_output, task = judged(close, mask_iou)
    assert per_output["points"].passed and not per_output["map"].passed
    passed, basis = verdict(per_output, task, "int8")
    assert passed and basis.endswith("; points, which it does not read, within them")

    per_output, task = judged(soft, mean_iou_of_all)
    assert task.read == ("map", "points")
    assert verdict(per_output, task, "int8")[0]


def found(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
    """Detections [N, 2] (class, score) after suppression: share of samples whose confident
    detections (score > 0.5) are exactly the labelled count."""
    hits = [int((o["dets"][:, 1] > 0.5).sum()) == n for o, n in zip(outputs, labels, strict=True)]
    return float(np.mean(hits))


def test_a_data_sized_output_may_differ_in_size_when_the_task_decides() -> None:
    """After non-maximum suppression the number of detections depends on the data; a lossy
    artifact that keeps one more low-scored box finds the same objects. Its outputs cannot be
    compared elementwise (sizes differ): a gross departure for an output of fixed size, not
    for one the contract says is sized by the data."""
    from compiler.core.parity import compare_outputs
    from compiler.core.task import verdict
    from compiler.core.tolerance import DEFAULT_TOLERANCES

    refs = [{"dets": np.array([[1, 0.9], [2, 0.8]], np.float32)} for _ in range(8)]
    outs = [{"dets": np.vstack([r["dets"], [[3, 0.2]]]).astype(np.float32)} for r in refs]
    labels = [2] * 8
    _, per_output = compare_outputs(outs, refs, lambda _n: DEFAULT_TOLERANCES["int8"])
    assert per_output["dets"].error.startswith("shape mismatch")
    task = score_task(TaskSpec(f"{__name__}:found"), outs, refs, labels, found)
    assert task.status == "passed"
    assert verdict(per_output, task, "int8") == (False, "")
    passed, basis = verdict(per_output, task, "int8", data_sized={"dets"})
    assert passed and "shape mismatch in sample 0" in basis


def test_without_a_task_a_data_sized_output_of_another_length_says_what_would_judge_it() -> None:
    """A lossy artifact that keeps one detection more fails (nothing else can judge it), and
    the failure says why and what to give: the task metric. An output of fixed size keeps the
    plain shape-mismatch message."""
    from compiler.core.contract import Contract, TensorSpec
    from compiler.core.tolerance import ParityPolicy
    from compiler.measure.verify import judge_outputs

    contract = Contract(
        inputs=[TensorSpec(name="image", dtype="float32", shape=[1, 3, 8, 8])],
        outputs=[
            TensorSpec(name="dets", dtype="float32", shape=["kept", 2]),
            TensorSpec(name="fixed", dtype="float32", shape=[3]),
        ],
    )
    refs = [{"dets": np.array([[1, 0.9]], np.float32), "fixed": np.ones(3, np.float32)}] * 4
    outs = [{"dets": np.array([[1, 0.9], [3, 0.2]], np.float32), "fixed": np.ones(2, np.float32)}]
    record = judge_outputs(outs * 4, refs, contract, "int8", ParityPolicy())
    assert record.status == "failed"
    (dets,) = record.outputs["dets"].failures
    assert dets.startswith("shape mismatch in sample 0: (2, 2) vs reference (1, 2)")
    assert "parity.task.metric" in dets
    assert record.outputs["fixed"].failures == (
        "shape mismatch in sample 0: (2,) vs reference (3,)",
    )


def test_outputs_empty_on_every_sample_give_no_verdict() -> None:
    """A detector finds nothing in generated data: every output is empty, the reference's and
    the artifact's, and agreeing on nothing shows nothing (not a pass). An artifact that
    finds boxes where the reference finds none is a failure."""
    from compiler.core.contract import Contract, TensorSpec
    from compiler.core.tolerance import ParityPolicy
    from compiler.measure.verify import judge_outputs

    contract = Contract(
        inputs=[TensorSpec(name="image", dtype="float32", shape=[1, 3, 8, 8])],
        outputs=[
            TensorSpec(name="boxes", dtype="float32", shape=["kept", 4]),
            TensorSpec(name="scores", dtype="float32", shape=["kept"]),
        ],
    )
    none = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32)}
    record = judge_outputs([none] * 4, [none] * 4, contract, "fp32", ParityPolicy())
    assert record.status == "not-verified"
    assert record.reason.startswith("nothing to compare: every output is empty")
    one = {"boxes": np.ones((1, 4), np.float32), "scores": np.ones(1, np.float32)}
    record = judge_outputs([one] + [none] * 3, [none] * 4, contract, "fp32", ParityPolicy())
    assert record.status == "failed"


def test_the_worse_bound_is_clopper_pearsons_and_narrows_with_more_samples() -> None:
    """What a pass on n samples says: none worse of 24 leaves up to 11.7 % of such inputs
    (1 - 0.05 ** (1 / 24)); with losses, the one-sided Clopper-Pearson bound (reference values
    from scipy.stats.beta.ppf(0.95, k + 1, n - k))."""
    from compiler.core.task import worse_bound

    assert worse_bound(0, 24) == pytest.approx(1 - 0.05 ** (1 / 24), rel=1e-12)
    assert worse_bound(0, 24) == pytest.approx(0.117346, abs=1e-6)
    assert worse_bound(1, 20) == pytest.approx(0.216106, abs=1e-6)
    assert worse_bound(3, 100) == pytest.approx(0.075711, abs=1e-6)
    assert worse_bound(5, 1000) == pytest.approx(0.010484, abs=1e-6)
    assert worse_bound(0, 8) > worse_bound(0, 24) > worse_bound(0, 300)
    assert worse_bound(2, 2) == 1.0 and worse_bound(0, 0) == 1.0
