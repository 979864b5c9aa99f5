"""Latency statistics, and the measurement next to the reference in the same process,
interleaved in short blocks, so that a contended host slows both alike and the ratio holds.
Standard library and numpy only."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LatencyStats", "measure_interleaved", "summarize"]


@dataclass(frozen=True)
class LatencyStats:
    __pydantic_config__ = {"extra": "forbid"}  # read by pydantic where embedded

    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    throughput_per_s: float
    samples_ms: tuple[float, ...] = ()


def summarize(samples_s: Sequence[float], batch: int) -> LatencyStats:
    ms = np.asarray(samples_s) * 1e3
    mean = float(ms.mean())
    return LatencyStats(
        runs=len(ms),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=mean,
        std_ms=float(ms.std()),
        min_ms=float(ms.min()),
        throughput_per_s=batch * 1e3 / mean if mean > 0 else 0.0,
        samples_ms=tuple(round(float(x), 4) for x in ms),
    )


def measure_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    warmup: int,
    runs: int,
    max_seconds: float,
    batch: int,
    block: int = 5,
    settle_s: float = 0.02,
) -> dict[str, LatencyStats]:
    """Time each zero-argument callable `runs` times, alternating in blocks of `block` runs
    (A A A B B B A A A ...), after `warmup` rounds. Before each block the process sleeps
    `settle_s` and makes one untimed run: runtimes whose worker threads spin after a run
    (ONNX Runtime, OpenVINO) would otherwise steal cores from whichever callable runs next
    (measured here: an ORT reference ran at 7 ms beside another ORT session, 3.4 ms beside
    OpenVINO, without this). Stops early (keeping at least 3 runs each) once `max_seconds`
    have passed.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while min(len(v) for v in times.values()) < runs:
        for name, fn in fns.items():
            time.sleep(settle_s)  # lets the previous runtime's spinning threads park
            fn()  # then one untimed run re-warms this one
            for _ in range(min(block, runs - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        done = min(len(v) for v in times.values())
        if done >= 3 and time.perf_counter() - start > max_seconds:
            break
    return {k: summarize(v, batch) for k, v in times.items()}
