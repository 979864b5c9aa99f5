"""Meaningful data for real models, usable without tests/ (scripts/make_data.py, perf/ and the
slow tier import it): rendered pages and lines, synthesized speech and notes, real files and
sentences, and a task check per model (scripts/realdata/catalog.py)."""

from __future__ import annotations

from scripts.realdata.paths import FONT_DIR, MODELS_DIR, models_cache
from scripts.realdata.text import (
    ORIENTATION_LABELS,
    ctc_alphabet,
    ctc_greedy_decode,
    font,
    orientation_feed,
    orientation_pages,
    render_page,
    render_text_line,
    text_line_feed,
)

__all__ = [
    "FONT_DIR",
    "MODELS_DIR",
    "ORIENTATION_LABELS",
    "ctc_alphabet",
    "ctc_greedy_decode",
    "font",
    "models_cache",
    "orientation_feed",
    "orientation_pages",
    "render_page",
    "render_text_line",
    "text_line_feed",
]
