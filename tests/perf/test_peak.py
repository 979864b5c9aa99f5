"""perf/peak.py: the second round of the peak probe and the fractions taken against it. The
kernels run for real on small matrices; nothing here asserts a rate."""

from __future__ import annotations

from perf.peak import (
    measure_peak,
    over_peak,
    peak_rounds,
    refresh_fractions,
    remeasure_peak,
)


def test_a_second_round_keeps_both_rounds_and_the_fastest_run_of_either() -> None:
    first = measure_peak(n=64, repeats=3)
    both = remeasure_peak(first)
    assert len(both["rounds"]) == 2 and both["rounds"][0] == first["rounds"][0]
    for name, rec in both["kernels"].items():
        assert len(rec["seconds"]) == 6, name
        assert rec["seconds"][:3] == first["kernels"][name]["seconds"]
    for precision in ("fp32", "int8"):
        assert both[precision]["gflops"] == max(r[precision] for r in both["rounds"])
        kernel = both[precision]["kernel"]
        assert both[precision]["gflops"] == both["kernels"][kernel]["best_gflops"]
    assert "2 rounds" in both["method"]
    assert peak_rounds(both).startswith(" Best of each round (before / after the models): fp32 ")
    assert peak_rounds(first) == ""


def test_fractions_are_taken_again_against_the_peak_of_both_rounds() -> None:
    peak = {"int8": {"gflops": 400.0}, "fp32": {"gflops": 100.0}}
    rows = [
        {"achieved_gflops": 336.0, "peak_used": "int8", "fraction_of_peak": 336.0 / 258.0},
        {"achieved_gflops": 50.0, "peak_used": "fp32", "fraction_of_peak": 0.6},
        {"error": "latency: failed"},  # nothing measured: left as it is
    ]
    assert over_peak(rows[0]["fraction_of_peak"])
    refresh_fractions(rows, peak)
    assert rows[0]["fraction_of_peak"] == 336.0 / 400.0 and not over_peak(0.84)
    assert rows[1]["fraction_of_peak"] == 0.5
    assert "fraction_of_peak" not in rows[2]
    assert not over_peak(None)
