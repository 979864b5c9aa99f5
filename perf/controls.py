"""Re-measure only the same-runtime controls of the packages an earlier perf run built: the
reference against itself (A/A) and `cpu/ort-fp32` against the reference, by the packages' own
latency method, so the method's spread can be checked on its own when the host is quiet.

    python perf/controls.py [--workdir perf/.work] [--repeats 3] [--load-below 1.0]

Writes perf/results/<date>-<host>-controls.json and .md (also printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python perf/controls.py` puts perf/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

from compiler.core.feeds import read_feeds_npz  # noqa: E402
from compiler.core.host import probe_host  # noqa: E402
from compiler.measure.timing import batch_size, describe_method  # noqa: E402
from compiler.measure.workers import reference_contender  # noqa: E402
from compiler.serving.manifest import read_manifest  # noqa: E402
from perf.measure import a_a_control, latency_repeats, package_contenders  # noqa: E402
from perf.models import MODELS  # noqa: E402
from perf.plan import Plan  # noqa: E402
from perf.report import speedup_cell, spread_cell  # noqa: E402

__all__ = ["main"]

CONTROLS = ("reference (A/A)", "cpu/ort-fp32")


def _wait_for_quiet(limit: float, max_wait_s: float) -> float:
    """Wait (up to `max_wait_s`) for the 1-minute load average to fall below `limit`."""
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(10)
    return os.getloadavg()[0]


def _measure(pkg: Path, plan: Plan, repeats: int) -> dict[str, Any]:
    manifest = read_manifest(pkg)
    feed = manifest.contract.validate_feeds(read_feeds_npz(pkg / "reference" / "inputs.npz")[0])
    ours, _ = package_contenders(pkg, probe_host())
    contenders = [a_a_control(pkg), *(c for c in ours if c.id in CONTROLS)]
    reference = reference_contender(pkg / "reference" / "model.onnx")
    load = os.getloadavg()[0]
    latency = latency_repeats(
        contenders,
        reference,
        feed,
        manifest.contract,
        plan.latency_policy(),
        repeats=repeats,
        batch=batch_size(manifest.contract, feed),
    )
    return {"load_average": [load, os.getloadavg()[0]], "latency": latency}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / "perf" / ".work")
    ap.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load-below", type=float, default=1.0, help="wait for a quieter host")
    ap.add_argument("--max-wait", type=float, default=600.0, help="seconds, per model")
    args = ap.parse_args(argv)
    plan = Plan.make(quick=False)
    host = probe_host()
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "host": host.model_dump(),
        "method": describe_method(plan.latency_policy()),
        "repeats": args.repeats,
        "models": {},
    }
    for name in MODELS:
        pkg = args.workdir / name / "pkg-cold"
        if not (pkg / "manifest.json").is_file():
            continue
        quiet = _wait_for_quiet(args.load_below, args.max_wait)
        print(f"[controls] {name} (load {quiet:.2f})", file=sys.stderr, flush=True)
        doc["models"][name] = _measure(pkg, plan, args.repeats)
    stem = f"{doc['date']}-{host.hostname or 'host'}-controls"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    md = _markdown(doc)
    (args.out / f"{stem}.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def _markdown(doc: dict[str, Any]) -> str:
    h = doc["host"]
    lines = [
        f"# Same-runtime controls: {doc['date']} on {h.get('hostname') or 'host'}",
        "",
        f"Host: {h['arch']} {h['cpu_model']} x{h['cpu_count']}, ISA {', '.join(h['isa'])}. "
        f"Method: {doc['method']}; {doc['repeats']} independent measurements each. The "
        "interval pools all pairs; repeats: the range of the measurements' own estimates.",
        "",
        "| model | load avg (start, end) | contender | speedup [interval] | repeats | within ±5 % |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in doc["models"].items():
        load = "{:.2f}, {:.2f}".format(*m["load_average"])
        for cid in CONTROLS:
            lat = m["latency"].get(cid, {})
            s, sp = lat.get("speedup"), lat.get("spread")
            inside = bool(
                s
                and sp
                and s["low"] >= 0.95
                and s["high"] <= 1.05
                and sp["min"] >= 0.95
                and sp["max"] <= 1.05
            )
            lines.append(
                f"| {name} | {load} | {cid} | {speedup_cell(lat)} | {spread_cell(lat)} "
                f"| {'yes' if inside else 'no'} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
