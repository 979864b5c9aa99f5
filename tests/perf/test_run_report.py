"""perf/run.py's larger-batch pass, its pure parts: which artifacts it times again, and the
table it renders. No timing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.measure import workers
from perf.measure import Contender
from perf.report import larger_batch_table
from perf.run import fastest_per_precision


def _contender(cid: str, precision: str, origin: str = "compile-pkg") -> Contender:
    spec = workers.Contender(cid, "onnxruntime", Path("/nowhere"), None)
    return Contender(id=cid, origin=origin, precision=precision, spec=spec)


def _row(cid: str, p50: float | None, origin: str = "compile-pkg", **extra: Any) -> dict:
    latency = {"pooled": {"p50_ms": p50}} if p50 is not None else {}
    return {"id": cid, "origin": origin, "latency": latency, **extra}


def test_the_fastest_of_each_precision_is_timed_again() -> None:
    ours = [
        _contender("cpu/ort-int8", "int8"),
        _contender("cpu/ov-int8", "int8"),
        _contender("cpu/ov-bf16", "bf16"),
        _contender("cpu/ort-fp32", "fp32"),
        _contender("cpu/ov-f32", "fp32"),
    ]
    rows = [
        _row("reference", 9.0, origin="reference"),
        _row("cpu/ort-int8", 3.0),
        _row("cpu/ov-int8", 2.4),
        _row("cpu/ov-bf16", 5.0),
        _row("cpu/ort-fp32", 8.9, error="latency: worker died"),  # no time to go by
        _row("cpu/ov-f32", 9.3),
    ]
    picked = fastest_per_precision(rows, ours)
    assert [c.id for c in picked] == ["cpu/ov-bf16", "cpu/ov-f32", "cpu/ov-int8"]
    assert fastest_per_precision([_row("cpu/ov-int8", None)], ours) == []


def _doc(larger: dict[str, Any]) -> dict[str, Any]:
    return {"models": {"resnet18": {"contenders": [], "larger_batch": larger}}}


def test_the_larger_batch_table_names_batch_speedup_and_peak() -> None:
    interval = {"estimate": 3.9, "low": 3.8, "high": 4.0, "pairs": 20, "confidence": 0.95}
    larger = {
        "batch": 8,
        "contenders": [
            _row("reference", 60.0, origin="reference", precision="fp32"),
            {
                **_row("cpu/ov-int8", 15.4, precision="int8", fraction_of_peak=0.871),
                "latency": {"pooled": {"p50_ms": 15.4, "throughput_per_s": 519.5}, **interval},
            },
        ],
    }
    md = "\n".join(larger_batch_table(_doc(larger)))
    assert "## At a larger batch: the fastest artifact of each precision" in md
    (line,) = [x for x in md.splitlines() if x.startswith("| resnet18 | 8 | cpu/ov-int8 |")]
    assert "| int8 | 15.40 | 519.5 |" in line and "| 87.1 |" in line
    skipped = "\n".join(larger_batch_table(_doc({"skipped": "the contract admits no batch > 1"})))
    assert larger_batch_table({"models": {"resnet18": {"contenders": []}}}) == []
    assert "| resnet18 | - | not timed: the contract admits no batch > 1 |" in skipped
