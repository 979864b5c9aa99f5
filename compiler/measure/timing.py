"""Latency of one artifact next to the reference model, on this host: the method and the record.

The speedup is a same-run ratio: the artifact and the reference are timed in alternating
blocks, so a contended host slows both alike.
"""

from __future__ import annotations

from pathlib import Path

from compiler.core.contract import Contract
from compiler.core.feeds import Feeds
from compiler.core.latency import measure_interleaved
from compiler.core.policies import LatencyPolicy
from compiler.core.records import LatencyRecord, MeasuredOn
from targets.runner import Runner, reference_runner

__all__ = ["METHOD", "batch_size", "measure_latency_next_to_reference"]

METHOD = (
    "interleaved with the reference in one process: blocks of 5 runs, each after a 20 ms "
    "pause and an untimed run; after warm-up"
)


def batch_size(contract: Contract, feed: Feeds) -> int:
    first = contract.inputs[0]
    if first.shape and isinstance(first.shape[0], str):
        return int(feed[first.name].shape[0])
    return 1


def measure_latency_next_to_reference(
    runner: Runner,
    feed: Feeds,
    contract: Contract,
    ref_model: Path | None,
    policy: LatencyPolicy,
    on: MeasuredOn,
) -> LatencyRecord:
    checked = runner.contract.validate_feeds(feed)  # time inference, not input validation
    fns = {"artifact": lambda: runner.run_checked(checked)}
    ref = None
    if ref_model is not None and ref_model.is_file():
        ref = reference_runner(ref_model, contract, policy.threads)
        ref.load()
        fns["reference"] = lambda: ref.run_checked(checked)
    batch = batch_size(contract, feed)
    stats = measure_interleaved(
        fns, warmup=policy.warmup, runs=policy.runs, max_seconds=policy.max_seconds, batch=batch
    )
    if ref is not None:
        ref.close()
    ref_stats = stats.get("reference")
    return LatencyRecord(
        host=on,
        batch=batch,
        input_shapes={k: list(v.shape) for k, v in feed.items()},
        runner=runner.describe(),
        artifact=stats["artifact"],
        reference=ref_stats,
        speedup_vs_reference=ref_stats.p50_ms / stats["artifact"].p50_ms if ref_stats else None,
        method=METHOD,
    )
