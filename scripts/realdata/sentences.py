"""Sentences for the sentence encoder (all-MiniLM-L6-v2): paraphrase pairs on distinct topics,
tokenized with the model's own tokenizer.json by the `tokenizers` library (pip install
tokenizers), padded to a fixed length as sentence-transformers pads a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.realdata.audio import SENTENCES
from scripts.realdata.text import word_lines

__all__ = ["PARAPHRASES", "SAMPLE_PARAPHRASES", "SEQUENCE", "other_sentences", "tokenize"]

SEQUENCE = 32  # tokens per feed (padded); every sentence below fits

# each pair says one thing twice; the pairs are about different things
PARAPHRASES = (
    ("A man is eating food.", "A man is eating a piece of bread."),
    ("The cat sleeps on the warm windowsill.", "A kitten is napping in the sunny window."),
    ("The train to Paris was delayed by an hour.", "Our Paris train left sixty minutes late."),
    ("She plays the violin in an orchestra.", "A woman performs violin with a symphony."),
    ("Stock prices fell sharply this morning.", "Shares dropped steeply early today."),
    (
        "Please water the tomato plants tonight.",
        "Remember to give the tomatoes water this evening.",
    ),
    ("The software update fixed the login bug.", "After the patch, signing in works again."),
    ("Heavy snow closed the mountain roads.", "The highway through the pass is shut by snowfall."),
    ("He scored the winning goal in extra time.", "His late strike won the match in overtime."),
    (
        "The museum opens a new dinosaur exhibit.",
        "A fossil gallery about dinosaurs is opening at the museum.",
    ),
)

# the parity samples' pairs: other topics again, so the task set above stays held out
SAMPLE_PARAPHRASES = (
    ("The bakery sells fresh bread every morning.", "Each morning the bakery has new loaves."),
    (
        "The child lost her red balloon at the fair.",
        "At the fair, a girl let go of her red balloon.",
    ),
    (
        "The river flooded the village after the storm.",
        "After the storm the river overflowed into town.",
    ),
    ("He repaired the bicycle's flat tyre.", "He fixed the puncture on his bike."),
    ("The library extended its opening hours.", "The library now stays open longer."),
    ("Two astronauts walked outside the space station.", "A pair of astronauts did a spacewalk."),
    ("The chef added too much salt to the soup.", "The soup the cook made was far too salty."),
    ("Our flight was cancelled because of fog.", "Fog grounded the plane we were booked on."),
)


def other_sentences(count: int, seed: int) -> list[str]:
    """Plain English sentences unrelated to PARAPHRASES, for calibration and parity data."""
    pool = list(SENTENCES) + [line + "." for line in word_lines(count, seed, words=(4, 9))]
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.permutation(len(pool))[:count]]


def tokenize(sentence: str, tokenizer_json: Path) -> dict[str, np.ndarray]:
    """One feed: input_ids, attention_mask, token_type_ids, int64 [1, SEQUENCE]."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.enable_truncation(SEQUENCE)
    tok.enable_padding(length=SEQUENCE)
    enc = tok.encode(sentence)
    return {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
