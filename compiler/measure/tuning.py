"""Runtime settings chosen by measurement: a short sweep per artifact at build.

A handful of candidates (ONNX Runtime: intra-op threads, spinning, execution mode; OpenVINO:
the THROUGHPUT hint with its streams, threads, and for a model with dynamic input dims the
model as built instead of a compile per input shape, `static_shapes`, never the other way),
each timed against the artifact's default
settings by the latency method (each in a worker of its own, paired ABBA blocks, the
speedup's distribution-free interval). A candidate is adopted only when its interval's lower
bound is above 1, so noise never picks one; the best such estimate wins. Nothing is adopted
from a sweep on a busy host (other work keeping more than a quarter of its cpus busy): under
contention fewer threads win, which a quiet serving host would pay for. "Busy" is other
processes' CPU time in short windows before and after the sweep while the build waits
(compiler/measure/contention.py), never the load average, which counts the sweep's own
workers. The sweep stops starting candidates once its time cap is spent (the rest are
recorded as skipped).

What it returns is a measurement (`TunedSettings`), kept outside the manifest's core: serving
applies it on a host like the build host (`compiler.core.records.tuned_runtime`).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

from compiler.core.contract import Contract
from compiler.core.feeds import Feeds, write_feeds_npz
from compiler.core.policies import LatencyPolicy
from compiler.core.records import MeasuredOn, TunedSettings, TuningCandidate
from compiler.core.settings import OnnxRuntimeSettings, OpenVinoSettings, RuntimeSettings
from compiler.measure.contention import other_work
from compiler.measure.timing import describe_method, time_workers
from compiler.measure.workers import Contender, WorkerFailed, WorkerProcess

__all__ = [
    "ADOPT_ABOVE",
    "TUNABLE",
    "adopt",
    "candidates",
    "family_confidence",
    "physical_cores",
    "settle",
    "skipped_tuning",
    "tune",
]

TUNABLE = ("onnxruntime", "openvino")  # the backends with settings worth a sweep
ADOPT_ABOVE = 1.0  # a candidate's interval must lie above this to replace the default
_MIN_BLOCKS_S = 0.3  # the least timed-block budget a candidate gets


def physical_cores() -> int:
    """Physical cores this process may use (ONNX Runtime's default thread count): distinct
    (package, core) pairs in /proc/cpuinfo among the allowed CPUs, else the allowed CPUs."""
    allowed = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            cpu, package = -1, ""
            for line in f:
                key, _, value = (p.strip() for p in line.partition(":"))
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    package = value
                elif key == "core id" and cpu in allowed:
                    cores.add((package, value))
    except (OSError, ValueError):
        cores = set()
    return len(cores) or len(allowed)


def candidates(
    default: RuntimeSettings,
    *,
    pinned_threads: bool,
    cpus: int,
    cores: int,
    dynamic: bool = False,
) -> list[tuple[str, RuntimeSettings]]:
    """The settings worth trying for an artifact, each differing from `default` in one
    setting (never one equal to it in effect). `pinned_threads`: the latency policy fixes
    threads, so thread counts are not tried; `dynamic`: the model has dynamic input dims, so
    OpenVINO's compile per input shape is tried."""
    tried: list[tuple[str, RuntimeSettings]] = []
    if isinstance(default, OnnxRuntimeSettings):
        current = default.intra_op_num_threads or cores  # 0: one per physical core
        if not pinned_threads:
            for n in sorted({1, cores, cpus}):
                if n != current:
                    tried.append((f"intra_op_num_threads={n}", _with(default, n_ort=n)))
        tried.append(
            (
                f"allow_spinning={not default.allow_spinning}",
                dataclasses.replace(default, allow_spinning=not default.allow_spinning),
            )
        )
        other: Literal["sequential", "parallel"] = (
            "parallel" if default.execution_mode == "sequential" else "sequential"
        )
        tried.append(
            (f"execution_mode={other}", dataclasses.replace(default, execution_mode=other))
        )
    elif isinstance(default, OpenVinoSettings):
        hint: Literal["LATENCY", "THROUGHPUT"] = (
            "THROUGHPUT" if default.performance_hint == "LATENCY" else "LATENCY"
        )
        # THROUGHPUT with the streams OpenVINO picks for this CPU (num_streams 0)
        tried.append(
            (
                f"performance_hint={hint}",
                dataclasses.replace(default, performance_hint=hint, num_streams=0),
            )
        )
        if not pinned_threads:
            for n in sorted({1, cpus}):
                if n != (default.num_threads or cores):  # 0: one per core
                    tried.append((f"num_threads={n}", _with(default, n_ov=n)))
        # as built where shapes compile static; never the other way: a compile for one shape
        # is not what the verdict judged where the settings have none (verify turns them
        # off where they compute otherwise: compiler/measure/verify.py `_judged_per_shape`)
        if dynamic and default.static_shapes:
            tried.append(("static_shapes=0", dataclasses.replace(default, static_shapes=0)))
    return tried


def _with(settings: RuntimeSettings, *, n_ort: int = 0, n_ov: int = 0) -> RuntimeSettings:
    if isinstance(settings, OnnxRuntimeSettings):
        return dataclasses.replace(settings, intra_op_num_threads=n_ort)
    assert isinstance(settings, OpenVinoSettings)
    return dataclasses.replace(settings, num_threads=n_ov)


def family_confidence(confidence: float, candidates: int) -> float:
    """Each candidate's interval confidence so that all of them hold together with
    `confidence` (Bonferroni): trying more candidates does not make noise likelier to win."""
    return 1.0 - (1.0 - confidence) / max(1, candidates)


def adopt(tried: list[TuningCandidate], confidence: float = 0.0) -> TuningCandidate | None:
    """The candidate faster than the default beyond its interval (the highest estimate of
    those whose lower bound is above ADOPT_ABOVE, at a coverage of at least `confidence`),
    or None: the default stays."""
    faster = [
        c
        for c in tried
        if c.status == "measured"
        and c.speedup is not None
        and c.speedup.low > ADOPT_ABOVE
        and c.speedup.confidence >= confidence
    ]
    return max(faster, key=lambda c: c.speedup.estimate if c.speedup else 0.0, default=None)


def skipped_tuning(
    default: RuntimeSettings, on: MeasuredOn, reason: str, method: str = ""
) -> TunedSettings:
    """The record of a sweep that did not run: the default stays, and why."""
    base = TuningCandidate(name="default", settings=default, status="baseline")
    return TunedSettings(
        status="skipped",
        reason=reason,
        host=on,
        default=default,
        settings=default,
        candidates=[base],
        method=method,
    )


def tune(
    artifact: Contender,
    feed: Feeds,
    contract: Contract,
    policy: LatencyPolicy,
    seconds: float,
    on: MeasuredOn,
) -> TunedSettings:
    """Sweep the artifact's candidate settings against its defaults for about `seconds`
    (worker start-ups included) and say which, if any, to adopt."""
    default = artifact.runtime
    cpus = len(os.sched_getaffinity(0))
    tried = candidates(
        default,
        pinned_threads=policy.threads > 0,
        cpus=cpus,
        cores=physical_cores(),
        dynamic=bool(contract.input_dims()),
    )
    each = policy.model_copy(
        update={"confidence": family_confidence(policy.confidence, len(tried))}
    )
    method = (
        "each candidate against the default settings, "
        + describe_method(each).replace("artifact and reference", "candidate and default", 1)
        + f" (all {len(tried)} intervals together at {policy.confidence:.0%}); adopted when "
        f"the interval's lower bound is above {ADOPT_ABOVE:g} at a coverage of at least "
        f"{policy.confidence:.0%}; the sweep capped at {seconds:g} s"
    )
    if not tried:
        return skipped_tuning(
            default, on, f"no runtime settings to try for {artifact.backend}", method
        )
    started, load, others = time.perf_counter(), os.getloadavg()[0], other_work()
    records = [TuningCandidate(name="default", settings=default, status="baseline")]
    reason = ""
    opts = {"threads": policy.threads, "warmup": policy.warmup}
    with tempfile.TemporaryDirectory(prefix="compile-pkg-tuning-") as tmp:
        work = Path(tmp)
        feeds = work / "feed.npz"
        write_feeds_npz(feeds, [feed])
        try:
            base = WorkerProcess.start(artifact, contract, feeds, work, **opts)
        except WorkerFailed as exc:
            return skipped_tuning(
                default, on, f"the default settings did not run: {exc.reason}", method
            )
        with base:
            for i, (name, settings) in enumerate(tried):
                left = seconds - (time.perf_counter() - started)
                if left <= 0 or reason:
                    why = reason or f"the sweep's {seconds:g} s were spent"
                    records.append(
                        TuningCandidate(name=name, settings=settings, status="skipped", reason=why)
                    )
                    continue
                budget = max(_MIN_BLOCKS_S, left / (len(tried) - i) / 2)
                record, reason = _try(
                    name, artifact, settings, base, contract, feeds, work, each, budget
                )
                records.append(record)
    # the workers are stopped: what runs now is other work. The lower of the two readings:
    # contention that lasts shows in both, while the first can catch this build's own
    # workers of the step before still exiting (OpenVINO's parity and latency workers read
    # as 1.3 cpus there, and as 0.0 after the sweep, on a quiet 2-cpu host)
    after = other_work()
    if others is None or (after is not None and after.cpus < others.cpus):
        others = after
    swept = TunedSettings(
        reason=reason,
        host=on,
        default=default,
        settings=default,
        candidates=records,
        method=method,
        seconds=round(time.perf_counter() - started, 3),
        host_load=round(max(load, os.getloadavg()[0]), 2),
        others_cpus=others.cpus if others else None,
        others_of=others.of if others else None,
    )
    return settle(swept, policy.confidence)


def settle(swept: TunedSettings, confidence: float) -> TunedSettings:
    """The sweep with its adopted candidate (`adopt`), unless the host was busy: then the
    defaults stay and the reason names the candidate that would have been adopted."""
    chosen = adopt(swept.candidates, confidence)
    if chosen is None:
        return swept
    if swept.busy:
        why = (
            f"{chosen.name} was faster beyond its interval, but not adopted: the host was busy "
            f"({_load(swept)}), where fewer threads "
            "win and the intervals may not hold"
        )
        reason = "; ".join(r for r in (swept.reason, why) if r)
        return swept.model_copy(update={"reason": reason})
    return swept.model_copy(update={"adopted": chosen.name, "settings": chosen.settings})


def _load(swept: TunedSettings) -> str:
    if swept.others_cpus is not None:
        return (
            f"other work kept {swept.others_cpus:g} of the build's {swept.cpus_watched} cpus busy"
        )
    return f"load {swept.host_load:g} on {swept.host.cpu_count} cpus"


def _try(
    name: str,
    artifact: Contender,
    settings: RuntimeSettings,
    base: WorkerProcess,
    contract: Contract,
    feeds: Path,
    work: Path,
    policy: LatencyPolicy,
    budget_s: float,
) -> tuple[TuningCandidate, str]:
    """One candidate timed against the running default worker; the reason to stop the
    sweep when the default's worker itself failed."""
    t0 = time.perf_counter()
    contender = dataclasses.replace(artifact, name=f"{artifact.name} {name}", runtime=settings)
    opts = {"threads": policy.threads, "warmup": policy.warmup}
    try:
        with WorkerProcess.start(contender, contract, feeds, work, **opts) as w:
            blocks = time_workers(w, base, policy.model_copy(update={"max_seconds": budget_s}))
    except WorkerFailed as exc:
        spent = round(time.perf_counter() - t0, 3)
        if exc.contender is base.contender:
            why = f"the default settings' worker failed ({exc.stage}): {exc.reason}"
            record = TuningCandidate(
                name=name, settings=settings, status="error", reason=why, seconds=spent
            )
            return record, why
        record = TuningCandidate(
            name=name,
            settings=settings,
            status="crashed",
            reason=f"{exc.stage}: {exc.reason}",
            seconds=spent,
        )
        return record, ""
    record = TuningCandidate(
        name=name,
        settings=settings,
        speedup=blocks.speedup,
        stopped=blocks.stopped,
        seconds=round(time.perf_counter() - t0, 3),
    )
    return record, ""
