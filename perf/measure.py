"""Side-by-side measurement in one process: the package's artifacts, Olive's artifacts and the
ONNX Runtime fp32 reference, each interleaved with the reference (A B A B ...), repeated so
noise shows.

Every artifact is loaded the way serving loads it (its backend's runner, default threads).
A repeat times every contender once, each in a `compiler.core.latency.measure_interleaved` pair
with the reference (the order rotates between repeats); the ratio to the reference is taken
within each pair, and the table reports the median ratio with its min-max over repeats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.feeds import read_feeds_npz
from compiler.core.host import HostInfo
from compiler.core.latency import LatencyStats, measure_interleaved, summarize
from compiler.core.parity import OutputParity, compare_outputs
from compiler.core.tolerance import DEFAULT_TOLERANCES
from compiler.serving.manifest import Manifest, read_manifest
from targets.runner import open_runner

__all__ = [
    "Contender",
    "close_all",
    "interleaved_repeats",
    "olive_contender",
    "olive_parity",
    "package_contenders",
    "package_parity",
    "reference_contender",
]

Feed = dict[str, np.ndarray]


@dataclass
class Contender:
    id: str  # "cpu/ov-int8", "olive/ort-int8", "reference"
    origin: str  # compile-pkg | olive | reference
    precision: str
    run: Callable[[Feed], dict[str, np.ndarray]]
    close: Callable[[], None] = lambda: None
    describe: dict[str, Any] = field(default_factory=dict)


def reference_contender(package: Path, manifest: Manifest) -> Contender:
    from targets.onnxruntime.backend import reference_session

    sess = reference_session(package / "reference" / "model.onnx")
    names = [o.name for o in manifest.contract.outputs]
    return Contender(
        "reference",
        "reference",
        "fp32",
        lambda f: dict(zip(names, sess.run(names, f), strict=True)),
        describe={
            "runtime": "onnxruntime",
            "model": "reference/model.onnx",
            "graph_optimization_level": "all",
        },
    )


def package_contenders(
    package: Path, host: HostInfo
) -> tuple[list[Contender], list[dict[str, str]]]:
    """Runners for the artifacts that run natively on `host`, and why the others do not."""
    manifest = read_manifest(package)
    runnable: list[Contender] = []
    skipped: list[dict[str, str]] = []
    for a in manifest.artifacts:
        why = ""
        if a.status != "built":
            why = f"{a.status}" + (f": {a.reason}" if a.reason else "")
        elif a.requirements is not None and a.requirements.mismatches(host):
            why = "not for this host: " + "; ".join(
                m.message for m in a.requirements.mismatches(host)
            )
        if why:
            skipped.append({"id": a.id, "precision": a.precision, "why": why[:300]})
            continue
        assert a.runtime is not None
        runner = open_runner(a.backend, package / a.directory, a.runtime, manifest.contract)
        try:
            runner.load()
        except Exception as exc:  # a runtime refusing this host is a finding, not a crash
            skipped.append(
                {
                    "id": a.id,
                    "precision": a.precision,
                    "why": f"failed to load: {' '.join(str(exc).split())[:300]}",
                }
            )
            continue
        runnable.append(
            Contender(
                a.id,
                "compile-pkg",
                a.precision,
                runner.run_checked,
                runner.close,
                describe=runner.describe(),
            )
        )
    return runnable, skipped


def olive_contender(job: dict[str, Any], manifest: Manifest) -> Contender:
    """Olive's artifact with the same runtime settings compile-pkg's runners use."""
    names = [o.name for o in manifest.contract.outputs]
    path = Path(job["artifact"])
    if job["format"] == "onnx":
        from targets.onnxruntime.backend import reference_session

        sess = reference_session(path)  # ORT CPU, ORT_ENABLE_ALL, default threads
        return Contender(
            f"olive/{job['workflow']}",
            "olive",
            "int8",
            lambda f: dict(zip(names, sess.run(names, f), strict=True)),
            describe={"runtime": "onnxruntime", "graph_optimization_level": "all"},
        )
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path),
        "CPU",
        {
            "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
    req = compiled.create_infer_request()
    ports = {n: compiled.output(i) for i, n in enumerate(names)}

    def run(f: Feed) -> dict[str, np.ndarray]:
        res = req.infer(f)
        return {n: np.asarray(res[p]) for n, p in ports.items()}

    return Contender(
        f"olive/{job['workflow']}",
        "olive",
        "int8",
        run,
        describe={"runtime": "openvino", "performance_hint": "LATENCY", "cpu_pinning": False},
    )


def _reference_data(package: Path) -> tuple[list[Feed], list[Feed]]:
    inputs = read_feeds_npz(package / "reference" / "inputs.npz")
    outputs = read_feeds_npz(package / "reference" / "outputs.npz")
    return inputs, outputs


def _worst(outputs: dict[str, OutputParity]) -> dict[str, Any]:
    """The output with the lowest cosine: the figure a reader should see."""
    out = min(outputs.values(), key=lambda o: o.cosine)
    return {
        "cosine": out.cosine,
        "max_abs_err": out.max_abs_err,
        "mean_abs_err": out.mean_abs_err,
        "top1_agreement": out.top1_agreement,
    }


def package_parity(manifest: Manifest, artifact_id: str) -> dict[str, Any]:
    """The package's own latest parity record (reports/parity.json), summarized."""
    recs = manifest.measured(artifact_id).parity
    if not recs:
        return {"status": "none"}
    rec = recs[-1]
    summary: dict[str, Any] = {"status": rec.status, "mode": rec.mode, "samples": rec.samples}
    if rec.outputs:
        summary |= _worst(rec.outputs)
    elif rec.reason:
        summary["reason"] = rec.reason
    return summary


def olive_parity(contender: Contender, package: Path) -> dict[str, Any]:
    """Olive's artifact against the package's reference outputs, by the package's own metrics
    and the default int8 tolerance, on the same samples."""
    inputs, refs = _reference_data(package)
    outs = [contender.run(f) for f in inputs]
    ok, per_output = compare_outputs(outs, refs, lambda name: DEFAULT_TOLERANCES["int8"])
    return {
        "status": "passed" if ok else "failed",
        "mode": "native",
        "samples": len(inputs),
        **_worst(per_output),
    }


def interleaved_repeats(
    contenders: list[Contender],
    feed: Feed,
    *,
    repeats: int,
    warmup: int,
    runs: int,
    max_seconds: float,
    batch: int,
) -> dict[str, dict[str, Any]]:
    """Per contender: pooled latency summary, per-repeat p50s and the ratio to the reference.

    Each contender is timed in a pair with the reference (A B A B ...), so a third runtime's
    lingering threads never sit between the two calls a ratio compares; the pairs' order
    rotates from repeat to repeat. `contenders` must include the one with id "reference".
    """
    ref = next(c for c in contenders if c.id == "reference")
    others = [c for c in contenders if c.id != "reference"]
    per: dict[str, list[LatencyStats]] = {c.id: [] for c in others}
    ref_in_pair: dict[str, list[LatencyStats]] = {c.id: [] for c in others}
    for r in range(repeats):
        k = r % max(1, len(others))
        for c in others[k:] + others[:k]:
            fns: dict[str, Callable[[], Any]] = {
                "reference": partial(ref.run, feed),
                c.id: partial(c.run, feed),
            }
            if r % 2:  # who goes first alternates too
                fns = dict(reversed(list(fns.items())))
            stats = measure_interleaved(
                fns, warmup=warmup, runs=runs, max_seconds=max_seconds, batch=batch
            )
            per[c.id].append(stats[c.id])
            ref_in_pair[c.id].append(stats["reference"])
    out: dict[str, dict[str, Any]] = {}
    all_ref = [s for reps in ref_in_pair.values() for s in reps]
    out["reference"] = _summary(all_ref, batch, None)
    for cid, reps in per.items():
        out[cid] = _summary(reps, batch, ref_in_pair[cid])
    return out


def _summary(
    reps: list[LatencyStats], batch: int, refs: list[LatencyStats] | None
) -> dict[str, Any]:
    pooled = summarize([x / 1e3 for s in reps for x in s.samples_ms], batch)
    rec: dict[str, Any] = {
        "pooled": dataclasses.asdict(pooled),
        "repeats": [dataclasses.asdict(s) for s in reps],
        "p50_ms_per_repeat": [s.p50_ms for s in reps],
    }
    if refs is not None:
        ratios = [rs.p50_ms / s.p50_ms for rs, s in zip(refs, reps, strict=True)]
        rec["speedup_vs_reference"] = {
            "median": float(np.median(ratios)),
            "min": float(min(ratios)),
            "max": float(max(ratios)),
            "per_repeat": ratios,
        }
        rec["reference_p50_ms_per_repeat"] = [s.p50_ms for s in refs]
    return rec


def close_all(contenders: list[Contender]) -> None:
    for c in contenders:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
