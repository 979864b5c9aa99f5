from __future__ import annotations

from compiler.core.latency import measure_interleaved, summarize


def test_interleaving_runs_each_callable_the_same_number_of_times() -> None:
    order: list[str] = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    stats = measure_interleaved(fns, warmup=1, runs=7, max_seconds=60, batch=2, block=3)
    assert stats["a"].runs == stats["b"].runs == 7
    # warm-up a b, then blocks: one untimed settle call + up to 3 timed runs each
    assert "".join(order[:2]) == "ab"
    assert "".join(order[2:10]) == "aaaabbbb"
    assert order.count("a") == order.count("b")


def test_summary_percentiles_and_throughput() -> None:
    s = summarize([0.001, 0.002, 0.003, 0.004], batch=4)
    assert s.p50_ms == 2.5 and s.min_ms == 1.0 and s.runs == 4
    assert abs(s.throughput_per_s - 4 / 0.0025) < 1e-6
