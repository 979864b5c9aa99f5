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
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import short_message
from compiler.core.host import HostInfo, Requirements
from compiler.core.latency import measure_interleaved
from compiler.core.parity import compare_outputs, parity_record
from compiler.pipeline.config import LatencyConfig, ParityConfig

__all__ = ["verify_artifact", "batch_size", "now_utc"]


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batch_size(contract: Contract, feed: dict[str, np.ndarray]) -> int:
    first = contract.inputs[0]
    if first.shape and isinstance(first.shape[0], str):
        return int(feed[first.name].shape[0])
    return 1


def verify_artifact(
    *,
    backend: str,
    artifact_dir: Path,
    runtime: dict[str, Any],
    requirements: Requirements,
    portable: bool,
    precision: str,
    contract: Contract,
    inputs: list[dict[str, np.ndarray]],
    ref_outputs: list[dict[str, np.ndarray]],
    ref_model: Path | None,
    parity_cfg: ParityConfig,
    latency_cfg: LatencyConfig,
    host: HostInfo,
    measure_latency: bool = True,
) -> dict[str, Any]:
    """Returns {"parity": record, "latency": record | None}."""
    from targets.registry import get_backend

    host_d = host.model_dump(exclude={"hostname"}) | {"measured_at": now_utc()}
    mismatches = requirements.mismatches(host)
    # A cross-host check is for another architecture's artifact in a portable format; an
    # artifact for this architecture that needs CPU features the host lacks is not run at
    # all (its runtime might silently pick other kernels or another precision).
    other_arch = requirements.arch != host.arch
    arch_only = other_arch and all(
        m.startswith("needs ") and ("host is" in m or "CPU features" in m) for m in mismatches
    )
    if mismatches and not (portable and arch_only and host.runtimes.get(requirements.runtime)):
        reason = "; ".join(mismatches)
        return {
            "parity": {
                "status": "not-verified",
                "reason": f"cannot run here: {reason}",
                "precision": precision,
                "host": host_d,
                "mode": "none",
            },
            "latency": None,
        }
    mode = "native" if not mismatches else "cross-host"
    note = (
        ""
        if mode == "native"
        else f"checked on {host.arch} with the {host.arch} build of {requirements.runtime} "
        f"{host.runtimes.get(requirements.runtime)}; NOT run on {requirements.arch}: "
        f"this shows the artifact's graph is right, not how the {requirements.arch} build behaves"
    )
    cls = get_backend(backend)
    try:
        runner = cls.runner(artifact_dir, runtime, contract, threads=latency_cfg.threads or None)
        with runner:
            outs = [runner.run(feed) for feed in inputs]
            ok, per_output = compare_outputs(
                outs, ref_outputs, lambda name: parity_cfg.tolerance(precision, name)
            )
            parity = parity_record(
                ok,
                per_output,
                precision=precision,
                samples=len(inputs),
                host=host_d,
                mode=mode,
                note=note,
                reference="normalized fp32 model on onnxruntime CPU",
            )
            latency = None
            if measure_latency and mode == "native":
                latency = _latency(runner, inputs[0], contract, ref_model, latency_cfg, host_d)
    except Exception as exc:  # a runtime failing on this artifact is a verdict, not a crash
        return {
            "parity": {
                "status": "error",
                "reason": f"could not run: {short_message(exc)}",
                "precision": precision,
                "host": host_d,
                "mode": mode,
            },
            "latency": None,
        }
    return {"parity": parity, "latency": latency}


def _latency(
    runner: Any,
    feed: dict[str, np.ndarray],
    contract: Contract,
    ref_model: Path | None,
    cfg: LatencyConfig,
    host_d: dict[str, Any],
) -> dict[str, Any]:
    from targets.onnxruntime.backend import reference_session

    checked = runner.contract.validate_feeds(feed)  # time inference, not input validation
    fns = {"artifact": lambda: runner._run(checked)}
    if ref_model is not None and ref_model.is_file():
        ref = reference_session(ref_model, cfg.threads)
        names = [o.name for o in contract.outputs]
        fns["reference"] = lambda: ref.run(names, feed)
    batch = batch_size(contract, feed)
    stats = measure_interleaved(
        fns, warmup=cfg.warmup, runs=cfg.runs, max_seconds=cfg.max_seconds, batch=batch
    )
    rec: dict[str, Any] = {
        "host": host_d,
        "batch": batch,
        "input_shapes": {k: list(v.shape) for k, v in feed.items()},
        "runner": runner.describe(),
        "artifact": stats["artifact"],
        "method": "interleaved with the reference in one process: blocks of 5 runs, each after a 20 ms pause and an untimed run; after warm-up",
    }
    if "reference" in stats:
        rec["reference"] = stats["reference"]
        rec["speedup_vs_reference"] = stats["reference"]["p50_ms"] / stats["artifact"]["p50_ms"]
    return rec
