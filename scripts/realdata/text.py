"""Rendered text for the OCR and document models: pages, lines, layouts.

Everything is drawn with PIL in DejaVu fonts, so it is the same on every host. Each generator
returns the model's input array (already normalized as the model's own package does) and
the truth the drawing knows: the rotation, the string, the boxes of lines and regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scripts.realdata.paths import FONT_DIR

__all__ = [
    "ORIENTATION_LABELS",
    "Box",
    "LayoutPage",
    "TextPage",
    "ctc_alphabet",
    "ctc_greedy_decode",
    "font",
    "layout_page",
    "orientation_feed",
    "orientation_pages",
    "render_page",
    "render_text_line",
    "text_line_feed",
    "text_page",
    "upright_or_flipped_line",
    "word_lines",
]

# PIL's rotate(angle) turns counter-clockwise; the model's classes are clockwise degrees.
ORIENTATION_LABELS = {0: 0, 90: 3, 180: 2, 270: 1}  # PIL angle -> class index (0/90/180/270)
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

_WORDS = (
    "the quick brown fox jumps over lazy dog invoice total amount date page report "
    "model compiler package latency parity section figure table result method data "
    "system value number order account address summary review chapter note"
).split()

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the model input


def font(size: int, name: str = "DejaVuSans.ttf"):  # -> PIL.ImageFont.FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(FONT_DIR / name), size)


def word_lines(
    count: int, seed: int, words: tuple[int, int] = (2, 5), marks: bool = False
) -> list[str]:
    """`count` lines of English words and numbers, reproducible from `seed`; with `marks`,
    half the lines also carry punctuation or a decimal number (':' ',' '.' as in '42.50')."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        picked = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(*words)))]
        if rng.random() < 0.5:
            picked.insert(int(rng.integers(0, len(picked) + 1)), str(int(rng.integers(1, 9999))))
        if marks and rng.random() < 0.5:
            at = int(rng.integers(0, len(picked)))
            mark = (
                "{}:",
                "{},",
                "{}.",
                "{} " + f"{rng.integers(1, 999)}.{rng.integers(0, 99):02d}",
            )
            picked[at] = str(rng.choice(mark)).format(picked[at])
        lines.append(" ".join(picked).capitalize())
    return lines


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


def _normalize(img, mean: np.ndarray, std: np.ndarray) -> np.ndarray:  # img: PIL.Image.Image
    x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - mean) / std
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def orientation_pages(count: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """`count` pages cycling through the four rotations: (feed array [1,3,224,224], label)."""
    out = []
    angles = list(ORIENTATION_LABELS)
    for i in range(count):
        angle = angles[i % 4]
        page = render_page(seed * 10_000 + i // 4).rotate(angle, fillcolor="white")
        out.append((_normalize(page, _IMAGENET_MEAN, _IMAGENET_STD), ORIENTATION_LABELS[angle]))
    return out


def orientation_feed(array: np.ndarray) -> dict[str, np.ndarray]:
    return {"x": array}


def _line_image(text: str, font_size: int):  # -> PIL.Image.Image, black on white, 8 px margin
    from PIL import Image, ImageDraw

    fnt = font(font_size)
    left, top, right, bottom = fnt.getbbox(text)
    pad = 8
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - left, pad - top), text, fill="black", font=fnt)
    return img


def render_text_line(text: str, height: int = 48, font_size: int = 32) -> np.ndarray:
    """Black text on white, resized to `height`, as ppocr_rec's input [1,3,48,W] (W % 8 == 0)."""
    from PIL import Image

    img = _line_image(text, font_size)
    width = max(8, int(round(img.width * height / img.height / 8)) * 8)
    img = img.resize((width, height), Image.Resampling.BILINEAR)
    half = np.full(3, 0.5, dtype=np.float32)
    return _normalize(img, half, half)


def text_line_feed(text: str) -> dict[str, np.ndarray]:
    return {"x": render_text_line(text)}


def upright_or_flipped_line(text: str, flipped: bool) -> np.ndarray:
    """The text-direction classifier's input [1,3,48,192]: the line resized to height 48
    (at most 192 wide), normalized to [-1, 1], zero-padded on the right, as RapidOCR does;
    `flipped` turns the line by 180 degrees first (the model's class 1)."""
    from PIL import Image

    img = _line_image(text, 32)
    if flipped:
        img = img.rotate(180)
    width = min(192, int(np.ceil(48 * img.width / img.height)))
    img = img.resize((width, 48), Image.Resampling.BILINEAR)
    half = np.full(3, 0.5, dtype=np.float32)
    out = np.zeros((1, 3, 48, 192), dtype=np.float32)
    out[..., :width] = _normalize(img, half, half)
    return out


@dataclass(frozen=True)
class TextPage:
    """A page for the text detector: its input [1,3,H,W] and the box of every drawn line."""

    x: np.ndarray
    lines: tuple[Box, ...]


def text_page(seed: int, size: tuple[int, int] = (640, 480)) -> TextPage:
    """Lines of text in several sizes at random places on a white page (W, H multiples of
    32), normalized to [-1, 1] as RapidOCR feeds PP-OCRv4 det; no two lines overlap."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    boxes: list[Box] = []
    y = int(rng.integers(12, 30))
    for text in word_lines(12, seed):
        fnt = font(int(rng.integers(16, 30)))
        x = int(rng.integers(10, width // 3))
        box = draw.textbbox((x, y), text, font=fnt)
        if box[3] > height - 10:
            break
        if box[2] < width - 10:
            draw.text((x, y), text, fill="black", font=fnt)
            boxes.append(box)
        y = int(box[3]) + int(rng.integers(14, 34))
    half = np.full(3, 0.5, dtype=np.float32)
    return TextPage(_normalize(img, half, half), tuple(boxes))


@dataclass(frozen=True)
class LayoutPage:
    """A document page for the layout detector: input [1,3,800,608] and its drawn regions
    by class name (title, text, figure, figure_caption, table, table_caption)."""

    x: np.ndarray
    regions: tuple[tuple[str, Box], ...]


def _paragraph(draw, x: int, y: int, width: int, lines: list[str], fnt) -> Box:
    top = y
    right = x
    for text in lines:
        while draw.textlength(text, font=fnt) > width and " " in text:
            text = text.rsplit(" ", 1)[0]
        draw.text((x, y), text, fill="black", font=fnt)
        right = max(right, x + int(draw.textlength(text, font=fnt)))
        y += int(fnt.size * 1.45)
    return (x, top, right, y)


def _table(draw, x: int, y: int, rows: int, cols: int, rng: np.random.Generator, fnt) -> Box:
    cell_w, cell_h = 120, int(fnt.size * 1.9)
    for r in range(rows):
        for c in range(cols):
            x0, y0 = x + c * cell_w, y + r * cell_h
            draw.rectangle((x0, y0, x0 + cell_w, y0 + cell_h), outline="black", width=1)
            text = str(rng.choice(_WORDS)) if r == 0 else f"{rng.integers(0, 9999)}"
            draw.text((x0 + 8, y0 + 5), text, fill="black", font=fnt)
    return (x, y, x + cols * cell_w, y + rows * cell_h)


def _figure(draw, x: int, y: int, w: int, h: int, rng: np.random.Generator) -> Box:
    draw.line((x + 20, y + h - 20, x + w - 10, y + h - 20), fill="black", width=2)
    draw.line((x + 20, y + 10, x + 20, y + h - 20), fill="black", width=2)
    bars = int(rng.integers(4, 8))
    step = (w - 50) // bars
    for i in range(bars):
        top = y + 10 + int(rng.integers(0, h - 50))
        x0 = x + 30 + i * step
        shade = (60 + 25 * i, 90, 200 - 15 * i)
        draw.rectangle((x0, top, x0 + step - 10, y + h - 21), fill=shade)
    return (x, y, x + w, y + h)


def layout_page(seed: int) -> LayoutPage:
    """A one-column report page: a title, paragraphs, a captioned bar chart and a captioned
    ruled table, placed in a seed-dependent order, 608x800 px, normalized like ImageNet
    (RapidLayout's PicoDet preprocessing)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (608, 800), "white")
    draw = ImageDraw.Draw(img)
    body = font(13)
    regions: list[tuple[str, Box]] = []
    y = 36
    title = " ".join(word_lines(1, seed, words=(3, 5)))
    tb = draw.textbbox((40, y), title, font=font(24, "DejaVuSans-Bold.ttf"))
    draw.text((40, y), title, fill="black", font=font(24, "DejaVuSans-Bold.ttf"))
    regions.append(("title", tb))
    y = int(tb[3]) + 24
    blocks = ["text", "figure", "text", "table"] if seed % 2 else ["text", "table", "figure"]
    for kind in blocks:
        if kind == "text":
            lines = word_lines(int(rng.integers(4, 7)), int(rng.integers(1 << 30)), (7, 11))
            box = _paragraph(draw, 40, y, 528, lines, body)
            regions.append(("text", box))
        elif kind == "figure":
            box = _figure(draw, 90, y, 420, 170, rng)
            regions.append(("figure", box))
            cap = f"Figure {int(rng.integers(1, 9))}: " + word_lines(1, seed + 1)[0].lower()
            cb = _paragraph(draw, 120, int(box[3]) + 8, 400, [cap], font(12))
            regions.append(("figure_caption", cb))
            box = (box[0], box[1], box[2], cb[3])
        else:
            cap = f"Table {int(rng.integers(1, 9))}: " + word_lines(1, seed + 2)[0].lower()
            cb = _paragraph(draw, 120, y, 400, [cap], font(12))
            regions.append(("table_caption", cb))
            box = _table(draw, 64, int(cb[3]) + 6, int(rng.integers(4, 7)), 4, rng, font(12))
            regions.append(("table", box))
        y = int(box[3]) + 28
        if y > 700:
            break
    return LayoutPage(_normalize(img, _IMAGENET_MEAN, _IMAGENET_STD), tuple(regions))


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
