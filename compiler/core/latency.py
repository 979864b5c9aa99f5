"""Latency statistics: summaries of timed runs, and the speedup over the reference as an
interval, measured in paired blocks (an artifact block next to a reference block) until the
interval is narrow or the time budget ends.

Each pair gives one ratio (median of the reference block / median of the artifact block):
blocks taken back to back see the same host load, so the ratio holds on a busy host where
absolute times do not. The interval is the distribution-free confidence interval of the
median of those ratios (order statistics of a binomial(n, 1/2)), so it assumes nothing about
how the noise is shaped. Standard library and numpy only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "BUDGET_CEILING",
    "LatencyStats",
    "PairedBlocks",
    "SpeedupInterval",
    "StopReason",
    "measure_paired",
    "median_interval",
    "pairs_needed",
    "speedup_interval",
    "summarize",
]

StopReason = Literal["narrow", "slower", "budget", "max-pairs"]
# how far past its time budget a measurement runs to take the pairs its confidence needs
BUDGET_CEILING = 10.0


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


def summarize(samples_s: Sequence[float], batch: int, *, keep_samples: bool = True) -> LatencyStats:
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
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
        samples_ms=tuple(round(float(x), 4) for x in ms) if keep_samples else (),
    )


@dataclass(frozen=True)
class SpeedupInterval:
    """Reference time / artifact time: the median over paired blocks, and the interval that
    holds the true median with probability `confidence` (above 1: the artifact is faster)."""

    __pydantic_config__ = {"extra": "forbid"}

    estimate: float
    low: float
    high: float
    confidence: float  # the coverage the interval achieved (lower when pairs were few)
    pairs: int
    ratios: tuple[float, ...] = ()  # one per pair, in the order measured

    @property
    def halfwidth(self) -> float:
        """The interval's larger distance from the estimate, relative to it (0.03: +-3 %)."""
        if self.estimate <= 0:
            return math.inf
        return max(self.high / self.estimate - 1.0, 1.0 - self.low / self.estimate)

    def beats(self, other: SpeedupInterval) -> bool:
        """Faster beyond both intervals: this one's lower bound above the other's upper bound."""
        return self.low > other.high

    def describe(self) -> str:
        return (
            f"{self.estimate:.2f}x [{self.low:.2f}-{self.high:.2f}] "
            f"({self.confidence:.0%}, {self.pairs} pairs)"
        )


def _coverage(n: int, k: int) -> float:
    """P(x_(k) <= median <= x_(n+1-k)) for n samples: 1 - 2 P(Binomial(n, 1/2) < k)."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2.0**n
    return max(0.0, 1.0 - 2.0 * tail)


def pairs_needed(confidence: float) -> int:
    """The fewest pairs whose [min, max] covers the median with `confidence`."""
    n = 1
    while _coverage(n, 1) < confidence:
        n += 1
    return n


def median_interval(
    values: Sequence[float], confidence: float
) -> tuple[float, float, float, float]:
    """(median, low, high, achieved coverage): the narrowest order-statistic interval whose
    coverage is at least `confidence`, or [min, max] with the coverage it has when the
    samples are too few."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("no values")
    k = 1
    while k + 1 <= (n + 1) // 2 and _coverage(n, k + 1) >= confidence:
        k += 1
    return float(np.median(x)), float(x[k - 1]), float(x[n - k]), _coverage(n, k)


def speedup_interval(
    reference_blocks: Sequence[Sequence[float]],
    artifact_blocks: Sequence[Sequence[float]],
    confidence: float,
) -> SpeedupInterval:
    """The speedup from paired blocks of timed runs (seconds): block i of each was taken
    back to back."""
    if len(reference_blocks) != len(artifact_blocks) or not artifact_blocks:
        raise ValueError("speedup_interval needs the same number (> 0) of blocks of each")
    ratios = [
        float(np.median(r)) / float(np.median(a))
        for r, a in zip(reference_blocks, artifact_blocks, strict=True)
    ]
    est, low, high, achieved = median_interval(ratios, confidence)
    return SpeedupInterval(
        estimate=est,
        low=low,
        high=high,
        confidence=round(achieved, 4),
        pairs=len(ratios),
        ratios=tuple(round(r, 5) for r in ratios),
    )


@dataclass(frozen=True)
class PairedBlocks:
    """What `measure_paired` timed: block i of each was taken back to back."""

    artifact: list[list[float]]
    reference: list[list[float]]
    speedup: SpeedupInterval
    stopped: StopReason
    seconds: float


def measure_paired(
    artifact_block: Callable[[], list[float]],
    reference_block: Callable[[], list[float]],
    *,
    confidence: float,
    target_halfwidth: float,
    max_pairs: int,
    budget_s: float,
    clock: Callable[[], float] = time.perf_counter,
    stop_below: float | None = None,
) -> PairedBlocks:
    """Time pairs of blocks (each call returns one block's run times in seconds), in ABBA
    order so a steady drift in the host's load favours neither, until the speedup's interval
    is within `target_halfwidth` at `confidence`, `max_pairs` pairs were taken, or
    `budget_s` has passed with the pairs a verdict at `confidence` needs in hand (at least
    one pair is always taken). The budget does not end a measurement short of those pairs:
    serving counts a speedup only at the policy's confidence, so an interval short of it
    leaves the artifact behind the reference however fast it is (a model of ~300 ms a run
    fits 5 pairs, 94 %, in 3 s). Past `BUDGET_CEILING` times the budget it ends anyway, with
    the coverage it reached. With `stop_below`, also once the interval (at full confidence)
    lies wholly below it: "slower" (the build stops timing an artifact that is settled as
    slower than the reference; its place after the reference does not need a narrower
    interval)."""
    start = clock()
    art: list[list[float]] = []
    ref: list[list[float]] = []
    need = pairs_needed(confidence)
    while True:
        if len(art) % 2 == 0:
            art.append(artifact_block())
            ref.append(reference_block())
        else:
            ref.append(reference_block())
            art.append(artifact_block())
        interval = speedup_interval(ref, art, confidence)
        stopped: StopReason | None = None
        if len(art) >= need and interval.halfwidth <= target_halfwidth:
            stopped = "narrow"
        elif len(art) >= need and stop_below is not None and interval.high < stop_below:
            stopped = "slower"
        elif len(art) >= max_pairs:
            stopped = "max-pairs"
        elif (spent := clock() - start) >= budget_s and (
            len(art) >= need or spent >= budget_s * BUDGET_CEILING
        ):
            stopped = "budget"
        if stopped is not None:
            return PairedBlocks(art, ref, interval, stopped, clock() - start)
