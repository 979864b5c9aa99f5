"""Latency of one artifact next to the reference model, on this host: the method and the record.

The artifact and the reference each run in a worker process of their own (the feed handed
over as an .npz in a temporary folder), one worker working at a time: blocks of timed runs
alternate between them in ABBA order, and each pair of blocks gives one ratio. Pairs are
taken until the speedup's confidence interval is within the policy's target or its time
budget ends (compiler/core/latency.py). A worker that dies or raises becomes the record's
verdict (`crashed` for the artifact, `error` for the reference); no worker outlives the call.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from compiler.core.contract import Contract
from compiler.core.feeds import Feeds, write_feeds_npz
from compiler.core.latency import PairedBlocks, measure_paired, summarize
from compiler.core.policies import LatencyPolicy
from compiler.core.records import LatencyRecord, MeasuredOn
from compiler.core.runtime import RunnerInfo
from compiler.measure.workers import Contender, WorkerFailed, WorkerProcess, reference_contender

__all__ = [
    "PairedMeasurement",
    "batch_size",
    "block_runs",
    "describe_method",
    "measure_latency",
    "measure_pair",
    "time_workers",
]


def describe_method(policy: LatencyPolicy) -> str:
    """The method in one sentence, recorded with every measurement."""
    return (
        "artifact and reference each in a worker process of its own, one at a time: blocks of "
        f"~{policy.block_ms:g} ms of runs alternating ABBA, each after a {policy.settle_ms:g} ms "
        "pause and one untimed run, after warm-up; speedup = median over pairs of (reference "
        "block median / artifact block median), with its distribution-free "
        f"{policy.confidence:.0%} interval; until within +-{policy.target_halfwidth:.0%}, "
        f"{policy.runs} pairs or {policy.max_seconds:g} s"
        + (
            ", or once slower than the reference beyond the interval"
            if policy.stop_when_slower
            else ""
        )
    )


def batch_size(contract: Contract, feed: Feeds) -> int:
    first = contract.inputs[0]
    if first.shape and isinstance(first.shape[0], str):
        return int(feed[first.name].shape[0])
    return 1


def block_runs(run_s: float, block_ms: float) -> int:
    """Runs per block so that a block lasts about `block_ms` (at least one run)."""
    return max(1, min(10_000, round(block_ms / 1e3 / max(run_s, 1e-6))))


@dataclass(frozen=True)
class PairedMeasurement:
    """Everything one paired measurement saw: the blocks and what each runtime used."""

    blocks: PairedBlocks
    artifact: RunnerInfo
    reference: RunnerInfo
    load_s: tuple[float, float]  # artifact, reference


def measure_pair(
    artifact: Contender,
    reference: Contender,
    feed: Feeds,
    contract: Contract,
    policy: LatencyPolicy,
) -> PairedMeasurement:
    """Time `artifact` against `reference`, each in its own worker. Raises WorkerFailed
    (its `name` says whose worker) when either cannot load or run or dies."""
    with tempfile.TemporaryDirectory(prefix="compile-pkg-latency-") as tmp:
        work = Path(tmp)
        feeds = work / "feed.npz"
        write_feeds_npz(feeds, [feed])
        opts = {"threads": policy.threads, "warmup": policy.warmup}
        with (
            WorkerProcess.spawn(artifact, contract, feeds, work, **opts) as art,
            WorkerProcess.spawn(reference, contract, feeds, work, **opts) as ref,
        ):
            art.load()  # one at a time: neither's load or warm-up shares the cores
            ref.load()
            return PairedMeasurement(
                time_workers(art, ref, policy),
                art.describe,
                ref.describe,
                (float(art.ready.get("load_s", 0.0)), float(ref.ready.get("load_s", 0.0))),
            )


def time_workers(art: WorkerProcess, ref: WorkerProcess, policy: LatencyPolicy) -> PairedBlocks:
    """Paired blocks of two started workers, `art` against `ref` (its speedup: ref time / art
    time), by the policy's method. Raises WorkerFailed when either dies."""
    settle = policy.settle_ms / 1e3
    k_art, k_ref = (block_runs(w.run_s, policy.block_ms) for w in (art, ref))
    art_block: Callable[[], list[float]] = lambda: art.block(k_art, settle)  # noqa: E731
    ref_block: Callable[[], list[float]] = lambda: ref.block(k_ref, settle)  # noqa: E731
    return measure_paired(
        art_block,
        ref_block,
        confidence=policy.confidence,
        target_halfwidth=policy.target_halfwidth,
        max_pairs=policy.runs,
        budget_s=policy.max_seconds,
        stop_below=1.0 if policy.stop_when_slower else None,
    )


def measure_latency(
    artifact: Contender,
    feed: Feeds,
    contract: Contract,
    ref_model: Path | None,
    policy: LatencyPolicy,
    on: MeasuredOn,
    *,
    source: Literal["build", "verify"] = "build",
) -> LatencyRecord:
    """The artifact's latency record on this host, next to the reference model. Without a
    reference model there is no speedup to measure: the record says so (`error`)."""
    started = time.perf_counter()
    load = os.getloadavg()[0]
    batch = batch_size(contract, feed)
    base: dict[str, Any] = {
        "host": on,
        "batch": batch,
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "source": source,
        "method": describe_method(policy),
    }
    if ref_model is None or not ref_model.is_file():
        why = "no reference model in the package: nothing to measure the speedup against"
        return LatencyRecord.model_validate(base | {"status": "error", "reason": why})
    try:
        m = measure_pair(
            artifact, reference_contender(ref_model, policy.threads), feed, contract, policy
        )
    except WorkerFailed as exc:
        seconds = round(time.perf_counter() - started, 3)
        if exc.contender.role == "reference":
            why = f"the reference could not be timed ({exc.stage}): {exc.reason}"
            return LatencyRecord.model_validate(
                base | {"status": "error", "reason": why, "seconds": seconds}
            )
        why = f"{exc.stage}: {exc.reason}"
        return LatencyRecord.model_validate(
            base | {"status": "crashed", "reason": why, "seconds": seconds}
        )
    b = m.blocks
    return LatencyRecord.model_validate(
        base
        | {
            "runner": m.artifact,
            "reference_runner": m.reference,
            "artifact": summarize(_flat(b.artifact), batch, keep_samples=False),
            "reference": summarize(_flat(b.reference), batch, keep_samples=False),
            "speedup": b.speedup,
            "speedup_vs_reference": b.speedup.estimate,
            "stopped": b.stopped,
            "seconds": round(time.perf_counter() - started, 3),
            "host_load": round(max(load, os.getloadavg()[0]), 2),
        }
    )


def _flat(blocks: list[list[float]]) -> list[float]:
    return [t for block in blocks for t in block]
