"""Parity by output meaning: each kind judged by its metrics, near-tied classes never counted as
flips, near-zero outputs never judged by a metric undefined there (numpy only, hand-made data
shaped like the real models' outputs)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from compiler.core.parity import (
    OutputParity,
    checks,
    compare_outputs,
    departure,
    judge,
    margin,
    output_metrics,
    worst_output,
)
from compiler.core.tolerance import (
    DEFAULT_TOLERANCES,
    ParityPolicy,
    TaskSpec,
    Tolerance,
    merge_tolerance,
)

FP32, BF16, INT8 = (DEFAULT_TOLERANCES[p] for p in ("fp32", "bf16", "int8"))


def _judged(out: np.ndarray, ref: np.ndarray, kind: str | None, tol: Tolerance) -> OutputParity:
    ok, per = compare_outputs([{"y": out}], [{"y": ref}], lambda _n: tol, {"y": kind})
    assert ok == per["y"].passed
    return per["y"]


def _metric_names(m: OutputParity) -> list[str]:
    return [c.metric for c in m.checks]


def test_metrics_match_hand_computed_values() -> None:
    ref = np.array([[1.0, 2.0, 4.0]], np.float32)
    out = np.array([[1.5, 3.5, 3.0]], np.float32)
    m = output_metrics([out], [ref], "dense_map")
    assert m.max_abs_err == 1.5
    assert math.isclose(m.max_rel_err, 0.75)  # max(0.5/1, 1.5/2, 1/4)
    assert math.isclose(m.mean_abs_err, 1.0)  # (0.5 + 1.5 + 1) / 3
    cos = (1.5 * 1 + 3.5 * 2 + 3 * 4) / (math.sqrt(1.5**2 + 3.5**2 + 9) * math.sqrt(1 + 4 + 16))
    assert math.isclose(m.cosine, cos, rel_tol=1e-9)
    assert math.isclose(m.rel_l2 or 0, math.sqrt(0.25 + 2.25 + 1) / math.sqrt(21), rel_tol=1e-9)
    assert math.isclose(m.ref_rms, math.sqrt(21 / 3), rel_tol=1e-9)
    assert m.top1_agreement is None and m.top1_decided is None  # a map has no classes


def test_top_k_only_for_class_outputs() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (8, 16)).astype(np.float32)
    for kind in ("dense_map", "state", "embedding", "boxes"):
        m = output_metrics([x], [x], kind)
        assert m.top1_agreement is None and m.top1_decided is None, kind
    for kind in ("class_scores", "logits_sequence"):
        assert output_metrics([x], [x], kind).top1_decided == 1.0, kind


def test_decided_top1_ignores_flips_the_reference_cannot_separate() -> None:
    """Reference top-2 gaps of 5e-6 (as the random CNN in tests/passes showed): the artifact's
    argmax there follows the kernels' rounding (0.906 on AVX2, 0.875 on AVX-512 VNNI for the
    same int8 model). Only the clear flip counts."""
    ref = np.array([[0.5, 0.499995, 0.000005], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]])
    out = np.array([[0.49, 0.51, 0.0], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
    m = output_metrics([out], [ref], "probabilities", INT8)
    assert m.top1_agreement == pytest.approx(1 / 3)  # plain argmax: both flips count
    assert m.top1_decided == pytest.approx(2 / 3)  # only the 0.9 -> 0.05 flip counts
    assert judge(m, INT8)[0].startswith("decided top-1 agreement 0.667 < 0.9")


def test_class_scores_are_compared_as_probabilities() -> None:
    """Logits: a flip between logits 2.0 and 2.00001 is a tie; between 5 and 0 it is not."""
    ref = np.array([[2.0, 2.00001, -3.0], [5.0, 0.0, -1.0]], np.float32)
    out = np.array([[2.00001, 2.0, -3.0], [0.0, 5.0, -1.0]], np.float32)
    m = output_metrics([out], [ref], "class_scores")
    assert (m.top1_agreement, m.top1_decided) == (0.0, 0.5)


def test_unknown_kind_with_softmax_rows_is_judged_as_probabilities() -> None:
    ref = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert output_metrics([ref], [ref], None).kind == "probabilities"
    logits = np.array([[3.0, -1.0, 0.5]])
    assert output_metrics([logits], [logits], None).kind == "other"


def test_an_already_quantized_softmax_is_judged_by_its_classes() -> None:
    """A model quantized before it came here sends its softmax out through a
    DequantizeLinear: rows on a 1/255 grid sum to 1 only within rounding (0.996 here). They
    are still distributions, judged by decided top-1: an artifact whose output no longer
    follows its input fails, however small its error in probability units."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 0.3, (8, 4))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ref = np.round(probs * 255) / 255
    assert np.abs(ref.sum(axis=1) - 1).max() > 1e-3  # off the plain distribution test
    stuck = np.tile(np.round(np.array([0.17, 0.29, 0.25, 0.29]) * 255) / 255, (8, 1))
    assert output_metrics([ref], [ref], None).kind == "probabilities"
    m = _judged(stuck, ref, "probabilities", INT8)
    assert not m.passed and _metric_names(m) == ["top1_decided"]
    assert INT8.max_rel_l2 and m.err_rms < INT8.max_rel_l2  # what judged it before
    assert _judged(ref, ref, "probabilities", INT8).passed
    # values off any coarse grid get no slack: 0.99-sum rows stay "other"
    assert output_metrics([probs * 0.99], [probs * 0.99], None).kind == "other"


def test_logits_sequence_counts_steps_over_samples_of_different_lengths() -> None:
    """ppocr_rec's [1, W/8, C] per text line: widths differ per sample."""
    steps = [np.eye(5)[[0, 1, 2, 0]][None], np.eye(5)[[3, 3, 0]][None]]
    outs = [steps[0], np.eye(5)[[3, 4, 0]][None]]  # one decided flip in 7 steps
    m = output_metrics(outs, steps, "logits_sequence")
    assert m.rows == 7 and m.top1_decided == pytest.approx(6 / 7)


def test_near_zero_detection_map_fp32_passes() -> None:
    """The issue's false failure: an fp32 detection map on generated inputs peaks at 2e-5
    (mean 4e-9), and an fp32 artifact differs by up to 1.8e-7. Relative error and cosine mean
    nothing there; the error is judged against atol and passes."""
    rng = np.random.default_rng(0)
    ref = (rng.random((1, 1, 64, 64)) ** 40 * 2e-5).astype(np.float32)
    out = ref + rng.uniform(-1.8e-7, 1.8e-7, ref.shape).astype(np.float32)
    m = _judged(out, ref, "dense_map", FP32)
    assert m.passed and m.cosine < FP32.min_cosine  # cosine would have failed it
    assert _metric_names(m) == ["max_abs_err", "rel_l2"]
    assert "reference near zero" in m.checks[1].note
    # the same map with an error of 1e-3 in it is no longer "near" the reference
    assert not _judged(ref + 1e-3, ref, "dense_map", FP32).passed


def test_dense_map_error_is_scale_aware() -> None:
    """A map with real signal: 4 % L2 error passes bf16, 50 % fails int8, whatever the scale."""
    rng = np.random.default_rng(1)
    for scale in (1e-3, 1.0, 1e3):
        ref = (rng.random((2, 1, 32, 32)) > 0.8) * scale
        bf16 = ref + rng.normal(0, 0.04 * np.sqrt((ref**2).mean()), ref.shape)
        assert _judged(bf16, ref, "dense_map", BF16).passed, scale
        int8 = ref * (rng.random(ref.shape) > 0.3)
        m = _judged(int8, ref, "dense_map", INT8)
        assert not m.passed and m.failures[0].startswith("L2 error"), scale


def _detector_head(rng: np.random.Generator, samples: int = 4, classes: int = 18) -> np.ndarray:
    """A raw detection head [1, 4 + classes, 400 anchors] per sample: box coordinates in
    pixels (0..320) beside sigmoid class scores, mostly near zero with a few confident ones."""
    heads = []
    for _ in range(samples):
        boxes = rng.uniform(0, 320, (1, 4, 400))
        scores = 1 / (1 + np.exp(-rng.normal(-7, 1.5, (1, classes, 400))))
        hits = 2 * classes
        scores[0, rng.integers(0, classes, hits), rng.integers(0, 400, hits)] = rng.uniform(
            0.5, 0.9, hits
        )
        heads.append(np.concatenate([boxes, scores], axis=1).astype(np.float32))
    return np.concatenate(heads)


def test_a_detector_head_is_judged_channel_by_channel() -> None:
    """int8 that zeroes every class score (one quantization scale for the concatenated head:
    nudenet's YOLOv8 found 0 of the reference's 8 detections) keeps the L2 error of the
    whole tensor at the pixels' 2 % and passed; channel by channel it fails. Scores kept to
    2 % of their own scale pass."""
    rng = np.random.default_rng(7)
    ref = _detector_head(rng)
    noise = 1 + rng.normal(0, 0.02, ref.shape)
    zeroed = ref * noise
    zeroed[:, 4:] = 0.0
    m = _judged(zeroed, ref, "dense_map", INT8)
    assert m.rel_l2 is not None and m.rel_l2 < INT8.max_rel_l2  # the old check passed it
    assert not m.passed and m.channel_axis == 1 and m.channels == 22
    assert any(f.startswith("L2 error") and "per channel" in f for f in m.failures)
    assert m.channel_worst is not None and m.channel_worst >= 4  # a class channel
    good = _judged((ref * noise).astype(np.float32), ref, "dense_map", INT8)
    assert good.passed and _metric_names(good) == [
        "top1_decided",
        "top1_uncommon",
        "rel_l2",
        "channel_rel_l2",
    ]
    assert good.channel_rel_l2 is not None and good.channel_rel_l2 < 0.05
    # fp32 keeps its elementwise bound: the channel check is for lossy precisions
    assert "channel_rel_l2" not in _metric_names(_judged(ref, ref, "dense_map", FP32))


@pytest.mark.parametrize("anchors_last", [True, False])
def test_an_80_class_head_is_judged_by_channel_either_way_round(anchors_last: bool) -> None:
    """COCO-sized heads: YOLOv8's [1, 84, anchors] and YOLOv5's [1, anchors, 85] layout (here
    [1, 400, 84]): zeroed scores fail by channel whichever axis holds the channels."""
    rng = np.random.default_rng(11)
    ref = _detector_head(rng, classes=80)
    zeroed = ref.copy()
    zeroed[:, 4:] = 0.0
    if not anchors_last:
        ref, zeroed = ref.transpose(0, 2, 1), zeroed.transpose(0, 2, 1)
    m = _judged(zeroed, ref, "other", INT8)
    assert m.rel_l2 is not None and m.rel_l2 < INT8.max_rel_l2
    assert not m.passed and m.channels == 84 and m.channel_axis == (1 if anchors_last else 2)


def _yolox_head(rng: np.random.Generator, samples: int = 8) -> np.ndarray:
    """A YOLOX head [1, anchors, 4 + 1 + 1] per sample, as ddddocr's character detector gives
    it: raw box offsets and log sizes (about -2..2), then sigmoid objectness (most anchors near
    0, a few objects' anchors above 0.5) and a class score high wherever it is read."""
    heads = []
    for _ in range(samples):
        boxes = rng.normal(0, 1, (1, 600, 4))
        obj = 1 / (1 + np.exp(-rng.normal(-6, 2, (1, 600, 1))))
        hits = rng.choice(600, 12, replace=False)
        obj[0, hits, 0] = rng.uniform(0.55, 0.95, 12)
        cls = rng.uniform(0.6, 1.0, (1, 600, 1))
        heads.append(np.concatenate([boxes, obj, cls], axis=2).astype(np.float32))
    return np.concatenate(heads)


def test_a_detector_s_score_channel_is_judged_as_decisions() -> None:
    """ddddocr's detector (YOLOX, [1, 3549, 6]): OpenVINO int8 kept the head's L2 error at
    0.135 (bound 0.2), all its channels of one scale, and passed on 16 captchas; on 40 others
    it missed 7 of the reference's 56 characters and found 4 that were not there. Its
    objectness channel, in [0, 1] and above 0.5 on a few anchors, is read as decisions: an
    artifact that drops a third of the objects' anchors below 0.5 fails, one that keeps them
    passes, and the box channels (outside [0, 1]) and the class channel (above 0.5 on most
    anchors) are no score channels."""
    rng = np.random.default_rng(21)
    ref = _yolox_head(rng)
    noisy = ref + rng.normal(0, 0.01, ref.shape).astype(np.float32)
    good = _judged(noisy, ref, "dense_map", INT8)
    assert good.passed and good.decision_channels == (4,) and good.threshold == 0.5
    lost = noisy.copy()
    positives = np.argwhere(ref[:, :, 4] > 0.5)
    for sample, anchor in positives[::3]:
        lost[sample, anchor, 4] = 0.3
    m = _judged(lost, ref, "dense_map", INT8)
    assert m.rel_l2 is not None and m.rel_l2 < INT8.max_rel_l2  # the whole tensor passes
    assert not m.passed and m.top1_uncommon is not None and m.top1_uncommon < 0.7
    assert "score channels [4]" in m.failures[0]


def test_channels_in_zero_one_that_are_no_scores_are_not_decisions() -> None:
    """Normalized box coordinates spread over [0, 1] are above 0.5 on half of the anchors:
    no score channel, judged by their L2 error as before (a 0.02 shift across 0.5 is no
    decision lost)."""
    rng = np.random.default_rng(22)
    ref = rng.uniform(0, 1, (4, 500, 4)).astype(np.float32)
    out = np.clip(ref + rng.normal(0, 0.02, ref.shape), 0, 1).astype(np.float32)
    m = _judged(out, ref, "dense_map", INT8)
    assert m.decision_channels == () and m.threshold is None and m.passed


def test_the_rows_of_a_sparse_map_are_not_channels() -> None:
    """A text detector's probability map [1, 1, H, W] is mostly background: its rows differ
    widely in RMS, but they are rows, not channels. Judged as a whole, as before."""
    rng = np.random.default_rng(12)
    ref = np.full((2, 1, 64, 64), 1e-4)
    ref[:, 0, 20:24, 8:56] = 0.9  # one text line per image
    out = np.clip(ref + rng.normal(0, 0.01, ref.shape), 0, 1)
    m = _judged(out, ref, "dense_map", INT8)
    assert m.channel_rel_l2 is None and m.passed


def test_channels_of_one_scale_keep_the_whole_tensor_check() -> None:
    """A feature map whose channels share a scale (spread under CHANNEL_SCALE_RATIO) is judged
    as before: no channel check, the same verdict."""
    rng = np.random.default_rng(8)
    ref = rng.normal(0, 1, (2, 16, 8, 8)) * rng.uniform(0.5, 5, (1, 16, 1, 1))
    out = ref + rng.normal(0, 0.05, ref.shape)
    m = _judged(out, ref, "dense_map", INT8)
    assert m.channel_rel_l2 is None and m.channels == 0
    assert m.passed and _metric_names(m) == ["rel_l2"]


def test_lossy_class_output_is_not_judged_elementwise() -> None:
    """ppocr bf16: one step's probability moves from 0.99 to 0.01 (max abs err ~1, as in the
    issue) while 99 of 100 steps agree: every line still reads right, so it passes."""
    ref = np.tile(np.eye(4)[None, [0, 1, 2, 3]], (1, 25, 1)) * 0.97 + 0.01
    out = ref.copy()
    out[0, 5] = out[0, 5][[1, 0, 2, 3]]
    m = _judged(out, ref, "logits_sequence", BF16)
    assert m.passed and m.max_abs_err > 0.9 and _metric_names(m) == ["top1_decided"]
    assert not _judged(out, ref, "logits_sequence", FP32).passed  # fp32: elementwise too


def test_a_linear_head_is_judged_by_its_argmax_and_its_values() -> None:
    """A lone Gemm output: 10 face landmark coordinates (pixels) or 10 class logits, the graph
    cannot say. An int8 artifact that keeps every row's argmax (the largest coordinate) but
    moves every landmark by 10-50 % passed as class scores; as a linear head it fails on its
    values, and one within int8's error passes both checks."""
    rng = np.random.default_rng(4)
    ref = rng.uniform(20, 90, (16, 10))
    moved = ref * rng.uniform(0.5, 0.9, ref.shape)
    moved[np.arange(16), ref.argmax(axis=1)] = ref.max(axis=1)  # every argmax kept
    assert _judged(moved, ref, "class_scores", INT8).passed  # top-1 alone: passed
    m = _judged(moved, ref, "linear_head", INT8)
    assert not m.passed and m.top1_decided == 1.0
    assert _metric_names(m) == ["top1_decided", "cosine", "rel_l2"]
    assert [c.metric for c in m.checks if not c.passed] == ["rel_l2"]
    near = ref + rng.normal(0, 0.5, ref.shape)
    assert _judged(near, ref, "linear_head", INT8).passed
    # class logits whose argmax flips fail as a linear head too, however close the values
    flipped = ref.copy()
    top2 = np.argsort(ref, axis=1)[:, -2:]
    flipped[np.arange(16), top2[:, 1]], flipped[np.arange(16), top2[:, 0]] = (
        ref[np.arange(16), top2[:, 0]],
        ref[np.arange(16), top2[:, 1]],
    )
    m = _judged(flipped, ref, "linear_head", INT8)
    assert [c.metric for c in m.checks if not c.passed] == ["top1_decided"]


def _ctc_steps(rng: np.random.Generator, chars: list[int], steps: int = 40) -> np.ndarray:
    """A CTC recognizer's probabilities [1, steps, 6]: blank (class 0) clearly on top of every
    step but the ones that read `chars` (one step each, spread over the line)."""
    probs = np.full((steps, 6), 0.02) + rng.uniform(0, 0.01, (steps, 6))
    probs[:, 0] = 0.9
    at = np.linspace(2, steps - 3, len(chars)).astype(int)
    probs[at, 0], probs[at, chars] = 0.02, 0.9
    return (probs / probs.sum(axis=1, keepdims=True))[None]


def test_steps_are_judged_where_a_class_other_than_the_common_one_is_read() -> None:
    """8 text lines of 40 CTC steps, 4 characters each. An artifact that reads every line as
    blank keeps 0.9 of all steps (int8's bound: it passed); over the 32 steps that hold a
    character it kept none. One misread character in 32 passes."""
    rng = np.random.default_rng(5)
    refs = [{"y": _ctc_steps(rng, list(rng.integers(1, 6, 4)))} for _ in range(8)]
    blank = [{"y": _ctc_steps(rng, [])} for _ in range(8)]
    ok, per = compare_outputs(blank, refs, lambda _n: INT8, {"y": "logits_sequence"})
    m = per["y"]
    assert not ok and m.top1_decided == pytest.approx(0.9) and m.top1_decided >= INT8.min_top1
    assert (m.common_class, m.uncommon_rows, m.top1_uncommon) == (0, 32, 0.0)
    assert [c.metric for c in m.checks if not c.passed] == ["top1_uncommon"]
    assert "where a class other than the common one is picked" in m.failures[0]
    one = [{"y": r["y"].copy()} for r in refs]
    row = one[0]["y"][0]
    step = int(np.flatnonzero(row.argmax(axis=1))[0])  # the line's first character
    char = int(row[step].argmax())
    other = 1 + char % 5  # another character
    row[step, [char, other]] = row[step, [other, char]]
    ok, per = compare_outputs(one, refs, lambda _n: INT8, {"y": "logits_sequence"})
    assert ok and per["y"].top1_uncommon == pytest.approx(31 / 32)
    # one row per sample (a classifier's batch): no steps, no common class
    rows = [r["y"][0, :1] for r in refs]
    assert output_metrics(rows, rows, "class_scores").common_class is None


def test_embedding_rows_by_cosine_and_padding_rows_left_out() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, (2, 6, 32))
    ref[:, 4:] = 0.0  # padding tokens: zero rows
    out = ref + rng.normal(0, 0.05, ref.shape) * (np.abs(ref) > 0)
    out[:, 4:] = rng.normal(0, 1e-5, (2, 2, 32))  # noise in padding is no disagreement
    m = _judged(out, ref, "embedding", INT8)
    assert m.passed and m.rows == 8 and m.top1_decided is None
    assert m.row_cosine_min is not None and m.row_cosine_min > 0.99
    assert _metric_names(m) == ["row_cosine"]


def test_independent_probabilities_in_probability_units() -> None:
    """A VAD's speech probability [N,1]: near-silence 0.002 vs 0.004 is a small error, and
    every decision at 0.5 holds."""
    ref = np.array([[0.002], [0.003], [0.91]])
    out = np.array([[0.004], [0.001], [0.93]])
    m = _judged(out, ref, "probabilities", INT8)
    assert m.passed and m.threshold == 0.5 and m.top1_decided == 1.0 and m.rows == 3
    assert _metric_names(m) == ["top1_decided", "top1_uncommon", "rel_l2"]
    assert m.checks[-1].value == pytest.approx(m.err_rms)


def test_independent_probabilities_are_judged_as_decisions_too() -> None:
    """A presence flag over 40 samples, mostly confident: int8 that moves the four
    uncertain ones across 0.5 (0.6 -> 0.45, 0.4 -> 0.55) keeps an RMS error of 0.05 in
    probability units, far inside int8's 0.2, and loses 4 of its 40 decisions (3 of the
    reference's 11 positives, one false positive; 8 of the 12 where either side says yes):
    it fails. Noise that keeps every decision passes, and a flip where the reference itself
    sits at 0.5 is no disagreement."""
    rng = np.random.default_rng(4)
    ref = np.where(rng.random((40, 1)) < 0.9, 0.02, 0.98)
    ref[:4] = [[0.6], [0.4], [0.62], [0.58]]
    out = ref.copy()
    out[:4] = [[0.45], [0.55], [0.44], [0.42]]
    m = _judged(out, ref, "probabilities", INT8)
    assert m.checks[-1].metric == "rel_l2" and m.checks[-1].value < 0.06
    assert m.top1_decided == pytest.approx(36 / 40) and not m.passed
    assert any("top1_uncommon" in f or "0.5" in f for f in m.failures)
    noisy = np.clip(ref + rng.normal(0, 0.03, ref.shape), 0, 1)
    noisy[:4] = ref[:4] + 0.02 * np.sign(ref[:4] - 0.5)
    assert _judged(noisy, ref, "probabilities", INT8).passed
    tied = ref.copy()
    tied[0] = 0.505
    flip = tied.copy()
    flip[0] = 0.49
    assert _judged(flip, tied, "probabilities", INT8).top1_decided == 1.0


def test_state_and_unknown_outputs() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 0.3, (2, 1, 128))
    m = _judged(ref * 1.3, ref, "state", INT8)  # 30 % off: an LSTM state that drifted
    assert not m.passed and _metric_names(m) == ["rel_l2"]
    m = _judged(ref * 1.01, ref, None, INT8)
    assert m.passed and _metric_names(m) == ["cosine", "rel_l2"]


def test_integer_outputs_by_exact_agreement() -> None:
    ref = np.arange(10, dtype=np.int64)
    out = ref.copy()
    out[0] = 9
    m = _judged(out, ref, None, FP32)
    assert m.agreement == 0.9 and not m.passed
    assert _judged(out, ref, None, INT8).passed


def test_a_label_map_is_also_judged_where_it_holds_something_other_than_background() -> None:
    """A segmentation's ArgMax label map, 16x16 per image, background 0 but for one 5x5
    object: an artifact that lost the object agrees on 0.9 of the pixels (int8's bound), and
    on none of the 25 that hold it. One whose object moved a pixel to the side keeps 20 of the
    30 pixels either holds (an IoU of 0.67): it fails too, where all pixels gave 0.96."""
    refs, lost, moved = [], [], []
    for i in range(4):
        ref = np.zeros((1, 16, 16), np.int64)
        ref[0, 4 + i : 9 + i, 5:10] = 1 + i
        refs.append({"y": ref})
        lost.append({"y": np.zeros_like(ref)})
        moved.append({"y": np.roll(ref, 1, axis=2)})
    ok, per = compare_outputs(lost, refs, lambda _n: INT8, {"y": None})
    m = per["y"]
    assert not ok and m.agreement == pytest.approx(1 - 25 / 256) and m.agreement >= 0.9
    assert (m.common_class, m.uncommon_rows, m.agreement_uncommon) == (0, 100, 0.0)
    assert [c.metric for c in m.checks if not c.passed] == ["agreement_uncommon"]
    ok, per = compare_outputs(moved, refs, lambda _n: INT8, {"y": None})
    assert not ok and per["y"].agreement_uncommon == pytest.approx(20 / 30)
    assert compare_outputs(refs, refs, lambda _n: INT8, {"y": None})[0]


def test_judge_applies_atol_plus_rtol_of_the_peak() -> None:
    tol = Tolerance(atol=0.1, rtol=0.1, min_cosine=0.9, min_top1=0.0)
    ref = np.array([10.0, 0.0])
    assert judge(output_metrics([np.array([11.0, 0.0])], [ref], "state"), tol) == []
    why = judge(output_metrics([np.array([11.2, 0.0])], [ref], "state"), tol)
    assert why and why[0].startswith("max abs err 1.2")


def test_nan_fails_every_precision() -> None:
    for tol in DEFAULT_TOLERANCES.values():
        m = output_metrics([np.array([np.nan, 1.0])], [np.array([1.0, 1.0])], None, tol)
        assert judge(m, tol)[0] == (
            "non-finite values (NaN/Inf) in the output or the reference at 1 position where "
            "the other holds another value"
        )


def test_the_references_own_infinities_and_nans_agree_where_the_artifact_holds_them() -> None:
    """Logits masked with -inf past a sequence's length (a masked_fill export): every fp32
    artifact failed ('non-finite values', max abs err nan) against the reference's own -inf,
    and the manifest held NaN. Matching non-finite positions agree and are left out of the
    value metrics; a position where only one side holds one fails at every precision."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 6, 10))
    ref[:, 4:, :] = -np.inf  # masked steps
    ref[0, 0, 3] = np.nan
    ref[1, 1, 2] = np.inf
    close = np.where(np.isfinite(ref), ref + 1e-6, ref)
    for tol in DEFAULT_TOLERANCES.values():
        for kind in (None, "class_scores", "dense_map", "logits_sequence"):
            m = output_metrics([close], [ref], kind, tol)
            assert judge(m, tol) == [], (kind, judge(m, tol))
            assert m.nonfinite_matched == 4 * 2 * 10 + 2 and m.nonfinite_differ == 0
            assert math.isfinite(m.max_abs_err) and m.max_abs_err == pytest.approx(1e-6)
            assert m.rel_l2 is not None and math.isfinite(m.rel_l2) and m.cosine > 0.999
        for broken, where in ((0.0, (0, 5, 0)), (-np.inf, (0, 0, 0)), (np.inf, (2, 5, 1))):
            bad = close.copy()
            bad[where] = broken
            m = output_metrics([bad], [ref], "class_scores", tol)
            assert m.nonfinite_differ == 1 and not m.finite
            assert judge(m, tol)[0].startswith("non-finite values (NaN/Inf)")
            assert departure(dataclasses.replace(m, tolerance=tol)).startswith("non-finite")
    # a masked class stays below every finite one: the argmax is the reference's
    m = output_metrics([close], [ref], "logits_sequence", DEFAULT_TOLERANCES["int8"])
    assert m.top1_agreement == 1.0 and m.rows == 4 * 6


def test_shape_mismatch_names_the_sample() -> None:
    ok, per = compare_outputs(
        [{"y": np.ones(3)}, {"y": np.ones(4)}], [{"y": np.ones(3)}, {"y": np.ones(5)}],
        lambda _n: FP32,
    )  # fmt: skip
    assert not ok and per["y"].failures == ("shape mismatch in sample 1: (4,) vs reference (5,)",)


@pytest.mark.parametrize("kind", [None, "probabilities", "class_scores", "embedding", "other"])
def test_a_data_sized_output_is_compared_across_samples_of_different_lengths(
    kind: str | None,
) -> None:
    """What a non-maximum suppression keeps (`[n]` scores, `[n, 4]` boxes) has another length
    in each sample, none in some: there are no rows of classes or embeddings to stack, and an
    fp32 artifact that reproduces them passes where the comparison once raised ValueError."""
    rng = np.random.default_rng(0)
    scores = [rng.random(k, dtype=np.float32) for k in (4, 3, 0, 6)]
    boxes = [rng.random((k, 4), dtype=np.float32) * 64 for k in (4, 3, 0, 6)]
    for refs in (scores, boxes):
        outs = [r + np.float32(1e-6) for r in refs]
        ok, per = compare_outputs(
            [{"y": o} for o in outs], [{"y": r} for r in refs], lambda _n: FP32, {"y": kind}
        )
        assert ok and per["y"].max_abs_err <= 1e-5
        if refs is scores:  # no fixed last axis: no rows of classes or embeddings
            assert per["y"].row_cosine_min is None
            # probabilities' elements are decisions at 0.5 whatever the rows
            decisions = kind == "probabilities"
            assert (per["y"].top1_agreement is None) != decisions
            assert per["y"].threshold == (0.5 if decisions else None)
        shifted = [r + np.float32(1.0) for r in refs]  # beyond fp32's bounds: still judged
        ok, per = compare_outputs(
            [{"y": o} for o in shifted], [{"y": r} for r in refs], lambda _n: FP32, {"y": kind}
        )
        assert not ok and not per["y"].error and per["y"].failures


def test_compare_outputs_uses_per_output_tolerance_and_kind() -> None:
    refs = [{"a": np.array([1.0, 2.0]), "b": np.array([1.0, 2.0])}]
    outs = [{"a": np.array([1.0, 2.001]), "b": np.array([1.0, 2.001])}]
    loose = Tolerance(atol=0.01, rtol=0, min_cosine=0.9, min_top1=0)
    tight = Tolerance(atol=1e-6, rtol=0, min_cosine=0.9, min_top1=0)
    ok, per = compare_outputs(outs, refs, lambda n: loose if n == "a" else tight, {"a": "state"})
    assert not ok and per["a"].passed and not per["b"].passed
    assert per["a"].kind == "state" and per["b"].kind == "other"


def test_margin_and_worst_output() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(0, 1, (4, 8))
    _, per = compare_outputs(
        [{"good": ref, "bad": ref * 1.5}], [{"good": ref, "bad": ref}], lambda _n: INT8
    )
    assert margin(per["good"]) > 0 > margin(per["bad"])
    worst = worst_output(per)
    assert worst is not None and worst[0] == "bad"
    assert all(c.margin() < 0 for c in checks(per["bad"], INT8) if not c.passed)


def test_tolerance_validation_and_partial_merge() -> None:
    with pytest.raises(ValueError, match="max_rel_l2 must be >= 0"):
        Tolerance(atol=None, min_cosine=0.9, min_top1=0.9, max_rel_l2=-1)
    with pytest.raises(ValueError, match="top1_tie must be in"):
        Tolerance(atol=None, min_cosine=0.9, min_top1=0.9, top1_tie=1.0)
    merged = merge_tolerance(INT8, {"min_top1": 0.95})
    assert merged.min_top1 == 0.95 and merged.max_rel_l2 == INT8.max_rel_l2
    with pytest.raises(ValueError, match="unknown tolerance fields"):
        merge_tolerance(INT8, {"atl": 1})
    assert FP32.elementwise and not INT8.elementwise


def test_policy_json_round_trip_and_older_manifests() -> None:
    policy = ParityPolicy(task=TaskSpec("metrics:accuracy", max_drop=0.01))
    doc = json.loads(json.dumps(dataclasses.asdict(policy)))
    assert ParityPolicy.from_json(doc) == policy
    # a schema-2 manifest written before kinds and tasks: int8 without an elementwise bound
    old = {"tolerances": {"int8": {"atol": None, "rtol": 0.0, "min_cosine": 0.98, "min_top1": 0.9}}}
    int8 = ParityPolicy.from_json(old).tolerance("int8", "y")
    assert not int8.elementwise and int8.max_rel_l2 is None
    assert ParityPolicy.from_json(old).task is None


def test_a_sampled_output_is_judged_by_its_distribution() -> None:
    """Two runs of a model that draws random numbers differ value by value: a sampled
    output passes on another draw of the same distribution (fp32's elementwise bound would
    fail it) and fails where the artifact saturates it, loses its noise or shifts it; its
    shape may differ from the reference's (a sampled length)."""
    rng = np.random.default_rng(5)

    def draw(n: int = 8, scale: float = 1.0, shift: float = 0.0) -> list[np.ndarray]:
        return [
            (rng.normal(0.3, 1.0, (1, 64)) * scale + shift).astype(np.float32) for _ in range(n)
        ]

    def run(outs: list[np.ndarray], refs: list[np.ndarray]) -> OutputParity:
        ok, per = compare_outputs(
            [{"y": o} for o in outs], [{"y": r} for r in refs], lambda _n: FP32, {"y": "sampled"}
        )
        assert ok == per["y"].passed
        return per["y"]

    refs = draw()
    other = run(draw(), refs)
    assert other.passed and _metric_names(other) == ["mean_shift", "spread_ratio"]
    assert not run(draw(), refs).failures
    assert not _judged(draw(1)[0], refs[0], "other", FP32).passed  # value by value: fails
    saturated = run([np.clip(o, -0.2, 0.2) for o in draw()], refs)
    assert not saturated.passed and "spread" in saturated.failures[-1]
    assert not run(draw(shift=1.5), refs).passed
    assert not run(draw(scale=0.0, shift=0.3), refs).passed  # the noise's term lost
    longer = run([rng.normal(0.3, 1.0, (1, 80)).astype(np.float32) for _ in range(8)], refs)
    assert longer.passed and longer.error == ""
    nan = run([np.full((1, 64), np.nan, np.float32)] * 8, refs)
    assert not nan.passed and "non-finite" in nan.failures[0]
