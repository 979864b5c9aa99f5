"""The latency statistics on synthetic samples: the speedup interval, its coverage, and when
paired measurement stops. Nothing here times real work."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from compiler.core.latency import (
    BUDGET_CEILING,
    PairedBlocks,
    SpeedupInterval,
    measure_paired,
    median_interval,
    pairs_needed,
    speedup_interval,
    summarize,
)


def test_summary_percentiles_and_throughput() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004], batch=4)
    assert s.p50_ms == 2.5 and s.min_ms == 1.0 and s.runs == 4
    assert abs(s.throughput_per_s - 4 / 0.0025) < 1e-6
    assert summarize([0.001, 0.002], batch=1, keep_samples=False).samples_ms == ()


@pytest.mark.parametrize(("confidence", "pairs"), [(0.5, 2), (0.9, 5), (0.95, 6), (0.99, 8)])
def test_pairs_needed_is_the_fewest_whose_range_covers_the_median(
    confidence: float, pairs: int
) -> None:
    assert pairs_needed(confidence) == pairs
    # [min, max] of n samples misses the median only when all fall on one side: 2 / 2**n
    assert 1 - 2 / 2**pairs >= confidence > 1 - 2 / 2 ** (pairs - 1)


def test_median_interval_uses_order_statistics() -> None:
    values = [float(v) for v in range(1, 11)]  # 10 values: 2nd and 9th cover 97.9 %
    est, low, high, cov = median_interval(values, 0.95)
    assert (est, low, high) == (5.5, 2.0, 9.0)
    assert cov == pytest.approx(1 - 2 * (1 + 10) / 1024)
    # too few values for the asked confidence: [min, max] with the coverage they have
    est, low, high, cov = median_interval([3.0, 1.0, 2.0], 0.95)
    assert (est, low, high, cov) == (2.0, 1.0, 3.0, 0.75)


def test_interval_covers_the_true_speedup_as_often_as_it_claims() -> None:
    """Log-normal block noise around a true 1.25x: the 95 % interval holds it in >= 93 % of
    2000 synthetic measurements of 8 pairs (exact coverage is 99.2 % for [min, max] of 8)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        ref = [list(1.25e-3 * rng.lognormal(0, 0.05, 5)) for _ in range(8)]
        art = [list(1e-3 * rng.lognormal(0, 0.05, 5)) for _ in range(8)]
        s = speedup_interval(ref, art, 0.95)
        hits += s.low <= 1.25 <= s.high
    assert hits / 2000 >= 0.93


def test_speedup_is_the_median_of_per_pair_ratios() -> None:
    ref = [[2.0, 2.0, 9.0], [2.2, 2.2, 2.2], [1.8, 1.8, 1.8]]  # an outlier run does not move it
    art = [[1.0, 1.0, 1.0], [1.1, 1.1, 1.1], [0.9, 0.9, 0.9]]
    s = speedup_interval(ref, art, 0.95)
    assert s.estimate == pytest.approx(2.0) and s.pairs == 3 and s.ratios == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError):
        speedup_interval(ref, art[:2], 0.95)


def test_lower_bound_beyond_upper_bound_is_what_beats() -> None:
    fast = SpeedupInterval(estimate=2.0, low=1.9, high=2.1, confidence=0.97, pairs=6)
    near = SpeedupInterval(estimate=1.8, low=1.6, high=1.95, confidence=0.97, pairs=6)
    slow = SpeedupInterval(estimate=1.0, low=0.98, high=1.02, confidence=0.97, pairs=6)
    assert fast.beats(slow) and not fast.beats(near) and not slow.beats(fast)
    assert fast.halfwidth == pytest.approx(0.05)
    assert fast.describe() == "2.00x [1.90-2.10] (97%, 6 pairs)"


def _blocks(values: list[float], order: list[str], name: str):  # type: ignore[no-untyped-def]
    it = itertools.cycle(values)

    def block() -> list[float]:
        order.append(name)
        return [next(it)] * 3

    return block


def test_paired_blocks_alternate_abba_and_stop_once_narrow() -> None:
    order: list[str] = []
    got = measure_paired(
        _blocks([1e-3], order, "a"),
        _blocks([2e-3], order, "r"),
        confidence=0.95,
        target_halfwidth=0.03,
        max_pairs=30,
        budget_s=60,
    )
    assert got.stopped == "narrow" and got.speedup.pairs == pairs_needed(0.95)
    assert "".join(order) == "arraarraarra"
    assert got.speedup.estimate == pytest.approx(2.0) and got.speedup.halfwidth == 0


def test_noisy_pairs_run_to_the_pair_limit() -> None:
    got = measure_paired(
        _blocks([1e-3, 1.5e-3], [], "a"),
        _blocks([2e-3], [], "r"),
        confidence=0.95,
        target_halfwidth=0.03,
        max_pairs=9,
        budget_s=60,
    )
    assert got.stopped == "max-pairs" and got.speedup.pairs == 9
    assert got.speedup.low < 1.5 < 2.0 <= got.speedup.high


def _noisy(budget_s: float, seconds_per_pair: float) -> PairedBlocks:
    ticks = itertools.count()
    return measure_paired(
        _blocks([1e-3, 1.5e-3], [], "a"),
        _blocks([2e-3], [], "r"),
        confidence=0.95,
        target_halfwidth=0.03,
        max_pairs=100,
        budget_s=budget_s,
        clock=lambda: seconds_per_pair * next(ticks),  # one clock read a pair
    )


def test_budget_ends_measurement_once_the_confidence_is_reachable() -> None:
    """A model slower than the budget allows still gets the pairs a verdict at the policy's
    confidence needs (6 at 95 %: serving counts no speedup short of it); a budget that
    holds more pairs ends where it ends."""
    slow = _noisy(budget_s=3, seconds_per_pair=1.0)  # 3 pairs would fit the budget
    assert slow.stopped == "budget" and slow.speedup.pairs == pairs_needed(0.95)
    assert slow.speedup.confidence >= 0.95
    quick = _noisy(budget_s=3, seconds_per_pair=0.25)
    assert quick.stopped == "budget" and quick.speedup.pairs == 12  # 3 s
    assert quick.speedup.confidence >= 0.95


def test_past_the_ceiling_the_budget_ends_it_with_the_coverage_reached() -> None:
    got = _noisy(budget_s=3, seconds_per_pair=BUDGET_CEILING)  # 3 pairs reach the ceiling
    assert got.stopped == "budget" and got.speedup.pairs == 3 < pairs_needed(0.95)
    assert got.speedup.confidence < 0.95


def test_an_artifact_settled_as_slower_stops_early() -> None:
    """Twice the reference's time: once the interval (at full confidence) is below 1, more
    pairs would only narrow a verdict that is already "after the reference"."""
    got = measure_paired(
        _blocks([2e-3, 2.2e-3], [], "a"),
        _blocks([1e-3, 1.05e-3], [], "r"),
        confidence=0.95,
        target_halfwidth=0.001,
        max_pairs=30,
        budget_s=60,
        stop_below=1.0,
    )
    assert got.stopped == "slower" and got.speedup.pairs == pairs_needed(0.95)
    assert got.speedup.high < 1.0 and got.speedup.confidence >= 0.95
    # without the rule, or for an artifact that is faster, it runs on as before
    for art, ref, below in ((2e-3, 1e-3, None), (1e-3, 2e-3, 1.0)):
        other = measure_paired(
            _blocks([art, art * 1.1], [], "a"),
            _blocks([ref, ref * 1.05], [], "r"),
            confidence=0.95,
            target_halfwidth=0.001,
            max_pairs=30,
            budget_s=60,
            stop_below=below,
        )
        assert other.stopped == "max-pairs"
