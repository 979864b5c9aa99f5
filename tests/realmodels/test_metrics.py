"""The task metrics' own logic on outputs made by hand (no model, no data tools): silero's
hysteresis and its per-chunk labels, nearest-paraphrase and nearest-voice ranking."""

from __future__ import annotations

import numpy as np

from scripts.realdata.audio import SpeechStream
from scripts.realdata.metrics import minilm, score_silero_vad, speech_flags, voice_encoder
from scripts.realdata.signals import chunk_labels

CHUNK = 512


def test_speech_flags_start_at_on_and_stop_below_off() -> None:
    probs = np.array([0.4, 0.6, 0.4, 0.36, 0.3, 0.45, 0.5])
    assert speech_flags(probs).tolist() == [False, True, True, True, False, False, True]


def _stream() -> SpeechStream:
    """20 chunks: quiet 0-5, an utterance 6-13, quiet 14-19 (hangover: 7 chunks)."""
    return SpeechStream(np.zeros(20 * CHUNK, dtype=np.float32), 16000, ((6 * CHUNK, 14 * CHUNK),))


def test_chunk_labels_mark_segments_and_hangover() -> None:
    labels = chunk_labels(_stream(), 7)
    assert [y["segment"] for y in labels] == [0] * 6 + [1] * 8 + [2] * 6
    assert [y["speech"] for y in labels] == [False] * 6 + [True] * 8 + [False] * 6
    # quiet chunks within 250 ms (7 chunks) of the utterance are not judged
    assert [y["counted"] for y in labels] == [False] * 6 + [True] * 8 + [False] * 6
    assert {y["stream"] for y in labels} == {7}


def _vad_outputs(probs: list[float]) -> list[dict[str, np.ndarray]]:
    return [{"output": np.array([[p]], dtype=np.float32)} for p in probs]


def test_vad_metric_finds_utterances_and_rejects_talk_in_quiet() -> None:
    stream = SpeechStream(
        np.zeros(60 * CHUNK, dtype=np.float32), 16000, ((20 * CHUNK, 30 * CHUNK),)
    )
    labels = chunk_labels(stream, 0)
    right = [0.9 if 20 <= i < 30 else 0.05 for i in range(60)]
    assert score_silero_vad(_vad_outputs(right), labels).score == 1.0
    deaf = [0.05] * 60
    assert score_silero_vad(_vad_outputs(deaf), labels).summary.startswith("0/1 utterances")
    chatty = [0.9] * 60  # speech everywhere: both judged quiet stretches are wrong
    said = score_silero_vad(_vad_outputs(chatty), labels)
    assert said.summary == "1/1 utterances found, 0/2 quiet stretches left alone"
    # chunks in any order: the metric sorts them per stream before the hysteresis
    order = np.random.default_rng(0).permutation(60)
    shuffled = score_silero_vad([_vad_outputs(right)[i] for i in order], [labels[i] for i in order])
    assert shuffled.score == 1.0


def _unit(rows: list[list[float]]) -> np.ndarray:
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_minilm_metric_ranks_each_paraphrase_first() -> None:
    emb = _unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0, 1]])
    labels = ["a", "a", "b", "b", "alone"]  # a sentence without a pair is only a distractor
    outputs = [{"sentence_embedding": e[None]} for e in emb]
    assert minilm(outputs, labels) == 1.0
    assert minilm(outputs, ["a", "b", "a", "b", "alone"]) == 0.0


def test_voice_metric_leaves_one_out() -> None:
    emb = _unit([[1, 0.1], [1, -0.1], [0.1, 1], [-0.1, 1], [0.7, 0.7]])
    outputs = [{"embedding": e[None]} for e in emb]
    # a voice heard once (the last) is a centroid to confuse, never a query
    assert voice_encoder(outputs, ["x", "x", "y", "y", "z"]) == 1.0
    assert voice_encoder(outputs, ["x", "y", "x", "y", "z"]) < 1.0
