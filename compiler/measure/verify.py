"""Check one artifact on this host: parity against the stored reference outputs, and latency
interleaved with the reference model. Used by the build's verify nodes and by
`compile-pkg verify`.

Where an artifact's requirements do not match the host: if only the CPU architecture
differs and its format is portable (ONNX, OpenVINO IR), it is run with this host's build of
its runtime and the record says so (mode "cross-host"); otherwise nothing is measured and
the record says why (status "not-verified").
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from compiler.core.contract import Contract
from compiler.core.errors import short_message
from compiler.core.feeds import Feeds
from compiler.core.host import HostInfo, Requirements
from compiler.core.parity import compare_outputs
from compiler.core.policies import LatencyPolicy
from compiler.core.records import (
    MeasuredOn,
    ParityMode,
    ParityRecord,
    VerifyOutput,
)
from compiler.core.settings import RuntimeSettings
from compiler.core.tolerance import ParityPolicy
from compiler.measure.timing import measure_latency_next_to_reference
from targets.runner import open_runner

__all__ = ["measured_on", "now_utc", "verify_artifact"]

REFERENCE = "normalized fp32 model on onnxruntime CPU"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def measured_on(host: HostInfo) -> MeasuredOn:
    """The host a measurement names (without its hostname), stamped with the time."""
    return MeasuredOn(**host.model_dump(exclude={"hostname"}), measured_at=now_utc())


def verify_artifact(
    *,
    backend: str,
    runtime: RuntimeSettings,
    requirements: Requirements,
    portable: bool,
    artifact_dir: Path,
    precision: str,
    contract: Contract,
    inputs: list[Feeds],
    ref_outputs: list[Feeds],
    ref_model: Path | None,
    parity: ParityPolicy,
    latency: LatencyPolicy,
    host: HostInfo,
    deferred: bool = False,
    measure_latency: bool = True,
) -> VerifyOutput:
    on = measured_on(host)
    if deferred:
        reason = "deferred: built on the serving host"
        return VerifyOutput(parity=ParityRecord(status="not-verified", reason=reason, host=on))
    mismatches = requirements.mismatches(host)
    # A cross-host check is for another architecture's artifact in a portable format; an
    # artifact for this architecture that needs CPU features the host lacks is not run at
    # all (its runtime might silently pick other kernels or another precision).
    arch_only = requirements.arch != host.arch and all(
        m.kind in ("arch", "isa") for m in mismatches
    )
    if mismatches and not (portable and arch_only and host.runtimes.get(requirements.runtime)):
        reason = "cannot run here: " + "; ".join(m.message for m in mismatches)
        record = ParityRecord(status="not-verified", reason=reason, precision=precision, host=on)
        return VerifyOutput(parity=record)
    mode: ParityMode = "native" if not mismatches else "cross-host"
    note = (
        ""
        if mode == "native"
        else f"checked on {host.arch} with the {host.arch} build of {requirements.runtime} "
        f"{host.runtimes.get(requirements.runtime)}; NOT run on {requirements.arch}: "
        f"this shows the artifact's graph is right, not how the {requirements.arch} build behaves"
    )
    try:
        runner = open_runner(
            backend, artifact_dir, runtime, contract, threads=latency.threads or None
        )
        with runner:
            outs = [runner.run(feed) for feed in inputs]
            ok, per_output = compare_outputs(
                outs, ref_outputs, lambda name: parity.tolerance(precision, name)
            )
            record = ParityRecord(
                status="passed" if ok else "failed",
                precision=precision,
                samples=len(inputs),
                mode=mode,
                note=note,
                reference=REFERENCE,
                host=on,
                outputs=per_output,
            )
            timing = None
            if measure_latency and mode == "native":
                timing = measure_latency_next_to_reference(
                    runner, inputs[0], contract, ref_model, latency, on
                )
    except Exception as exc:  # a runtime failing on this artifact is a verdict, not a crash
        reason = f"could not run: {short_message(exc)}"
        record = ParityRecord(
            status="error", reason=reason, precision=precision, host=on, mode=mode
        )
        return VerifyOutput(parity=record)
    return VerifyOutput(parity=record, latency=timing)
