"""Throughput at the batch sizes a package is served with: items per second of the artifact
next to the reference at the same batch, in one run (compiler/measure/timing.py's paired
method), so the ratio holds on a busy host where absolute figures do not.

A batch the contract does not allow (a fixed first dim, or one whose range excludes it) is
recorded as skipped with the reason; the batch the latency was measured at reuses that
measurement (the same paired blocks give the same ratio)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from compiler.core.contract import Contract
from compiler.core.feeds import Feeds
from compiler.core.policies import LatencyPolicy
from compiler.core.records import LatencyRecord, ThroughputRecord
from compiler.measure.timing import measure_pair
from compiler.measure.workers import Contender, WorkerFailed, reference_contender

__all__ = ["accepted", "batch_feed", "batch_problem", "measure_throughput"]


def accepted(contract: Contract, own: Contract | None) -> Contract:
    """What an artifact accepts: the package's contract with the dims its own pins (a
    library built for fixed shapes) pinned, as serving checks inputs."""
    if own is None:
        return contract
    pinned = {k: r for k, r in own.dims.items() if r.min == r.max}
    return contract.model_copy(update={"dims": {**contract.dims, **pinned}})


def batch_problem(contract: Contract, batch: int) -> str:
    """Why `contract` cannot take `batch` rows on axis 0 of every input ("" when it can)."""
    for t in contract.inputs:
        first = t.shape[0] if t.shape else None
        if not isinstance(first, str):
            return f"input '{t.name}' has a fixed first dim {first}: batch {batch} cannot be fed"
        r = contract.dims.get(first)
        if r is not None and not r.min <= batch <= r.max:
            return (
                f"dim '{first}' (axis 0 of input '{t.name}') allows {r.min}..{r.max}, not {batch}; "
                f"widen it with --set dims.{first}.max={batch}"
            )
    return ""


def batch_feed(samples: Sequence[Feeds], batch: int) -> Feeds:
    """`batch` rows on axis 0 of every input, from the samples shaped like the first one,
    in turn (rows repeat when the samples hold fewer)."""
    first = samples[0]
    alike = [
        s
        for s in samples
        if all(s[k].shape[1:] == v.shape[1:] and s[k].dtype == v.dtype for k, v in first.items())
    ]
    out: Feeds = {}
    for name in first:
        rows = np.concatenate([s[name] for s in alike], axis=0)
        reps = -(-batch // max(1, rows.shape[0]))
        out[name] = np.ascontiguousarray(np.concatenate([rows] * reps, axis=0)[:batch])
    return out


def _from_latency(latency: LatencyRecord, batch: int) -> ThroughputRecord:
    art, ref = latency.artifact, latency.reference
    return ThroughputRecord(
        batch=batch,
        reason="the latency measurement at this batch",
        items_per_s=batch * 1e3 / art.p50_ms if art and art.p50_ms > 0 else None,
        reference_items_per_s=batch * 1e3 / ref.p50_ms if ref and ref.p50_ms > 0 else None,
        speedup=latency.speedup,
        stopped=latency.stopped,
    )


def _median(blocks: list[list[float]]) -> float:
    return float(np.median([t for b in blocks for t in b]))


def measure_throughput(
    artifact: Contender,
    samples: Sequence[Feeds],
    contract: Contract,
    ref_model: Path | None,
    policy: LatencyPolicy,
    batch_sizes: Sequence[int],
    latency: LatencyRecord | None,
) -> list[ThroughputRecord]:
    """One record per batch size: measured, skipped (with why) or the worker's failure.
    `contract`: what the artifact accepts (its own pinned dims applied)."""
    records = []
    for batch in batch_sizes:
        if latency is not None and latency.measured and latency.batch == batch:
            records.append(_from_latency(latency, batch))
            continue
        why = batch_problem(contract, batch)
        if not why and (ref_model is None or not ref_model.is_file()):
            why = "no reference model in the package: nothing to compare with"
        if why:
            records.append(ThroughputRecord(batch=batch, status="skipped", reason=why))
            continue
        assert ref_model is not None
        records.append(
            _measure(artifact, batch_feed(samples, batch), contract, ref_model, policy, batch)
        )
    return records


def _measure(
    artifact: Contender,
    feed: Feeds,
    contract: Contract,
    ref_model: Path,
    policy: LatencyPolicy,
    batch: int,
) -> ThroughputRecord:
    started = time.perf_counter()
    try:
        m = measure_pair(
            artifact, reference_contender(ref_model, policy.threads), feed, contract, policy
        )
    except WorkerFailed as exc:
        return ThroughputRecord(
            batch=batch,
            status="error" if exc.contender.role == "reference" else "crashed",
            reason=f"{exc.contender.role} ({exc.stage}): {exc.reason}",
            seconds=round(time.perf_counter() - started, 3),
        )
    b = m.blocks
    return ThroughputRecord(
        batch=batch,
        items_per_s=batch / _median(b.artifact),
        reference_items_per_s=batch / _median(b.reference),
        speedup=b.speedup,
        stopped=b.stopped,
        seconds=round(time.perf_counter() - started, 3),
    )
