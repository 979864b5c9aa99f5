"""Side-by-side latency by the method every package records (compiler/measure/timing.py):
each contender (the package's artifacts, Olive's artifacts, and the reference itself as an
A/A control) in a worker process of its own, timed in paired blocks against the ONNX Runtime
fp32 reference in another worker, one contender at a time, until the speedup's interval is
narrow or the budget ends. Repeated, rotating the order, so the spread between independent
measurements shows next to each interval.

Parity and task accuracy are not timing: they run afterwards in this process, each contender
loaded through the same runner serving uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.feeds import read_feeds_npz
from compiler.core.host import HostInfo
from compiler.core.latency import speedup_interval, summarize
from compiler.core.parity import OutputParity, compare_outputs
from compiler.core.policies import LatencyPolicy
from compiler.core.records import tuned_runtime
from compiler.core.settings import OnnxRuntimeSettings, OpenVinoSettings
from compiler.measure import workers
from compiler.measure.contention import OtherWorkMeter
from compiler.measure.timing import measure_pair
from compiler.serving.manifest import Manifest, read_manifest
from targets.runner import Runner, open_runner

__all__ = [
    "Contender",
    "a_a_control",
    "beside_reference",
    "latency_repeats",
    "olive_contender",
    "olive_parity",
    "open_in_process",
    "package_contenders",
    "package_parity",
    "tile_batch",
]

Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class Contender:
    id: str  # "cpu/ov-int8", "olive/ort-int8", "reference (A/A)"
    origin: str  # compile-pkg | olive | reference
    precision: str
    spec: workers.Contender  # what its worker loads


def package_contenders(
    package: Path, host: HostInfo
) -> tuple[list[Contender], list[dict[str, str]]]:
    """The artifacts that run natively on `host`, and why the others do not."""
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
        # the settings serving runs it with here: a sweep's adopted ones on a host like the
        # build host, else the manifest's (compiler/serving/loader.py does the same)
        runtime, _ = tuned_runtime(a.runtime, manifest.measured(a.id).latency, host)
        spec = workers.Contender(a.id, a.backend, package / a.directory, runtime)
        runnable.append(Contender(a.id, "compile-pkg", a.precision, spec))
    return runnable, skipped


def a_a_control(package: Path) -> Contender:
    """The reference model in a second worker, timed against itself: the method's own noise
    (its true speedup is 1)."""
    ref = workers.reference_contender(package / "reference" / "model.onnx")
    spec = dataclasses.replace(ref, name="reference (A/A)", role="artifact")
    return Contender("reference (A/A)", "reference", "fp32", spec)


def beside_reference(
    package: Path,
    contenders: list[Contender],
    feed: Feed,
    contract: Contract,
    policy: LatencyPolicy,
    *,
    repeats: int,
    batch: int,
) -> dict[str, dict[str, Any]]:
    """`contenders` and the A/A control, each timed against the package's reference
    (`latency_repeats`), the A/A first; `other_work`: the CPUs' worth of other work on the
    host over the whole of it (`OtherWorkMeter`), where /proc says."""
    reference = workers.reference_contender(package / "reference" / "model.onnx")
    with OtherWorkMeter() as meter:
        out = latency_repeats(
            [a_a_control(package), *contenders],
            reference,
            feed,
            contract,
            policy,
            repeats=repeats,
            batch=batch,
        )
    if meter.result is not None:
        out["other_work"] = {"cpus": meter.result.cpus, "of": meter.result.of}
    return out


def olive_contender(job: dict[str, Any]) -> Contender:
    """Olive's artifact with the runtime settings compile-pkg's own artifacts use."""
    path = Path(job["artifact"])
    settings: OnnxRuntimeSettings | OpenVinoSettings
    if job["format"] == "onnx":
        backend, settings = "onnxruntime", OnnxRuntimeSettings(model=path.name)
    else:
        backend, settings = "openvino", OpenVinoSettings(xml=path.name, inference_precision="f32")
    spec = workers.Contender(f"olive/{job['workflow']}", backend, path.parent, settings)
    return Contender(spec.name, "olive", "int8", spec)


def open_in_process(c: Contender, contract: Contract) -> Runner:
    """A loaded runner for parity and task accuracy (never for timing)."""
    runner = open_runner(c.spec.backend, c.spec.directory, c.spec.runtime, contract)
    runner.load()
    return runner


# ----------------------------------------------------------------------------- latency


def latency_repeats(
    contenders: list[Contender],
    reference: workers.Contender,
    feed: Feed,
    contract: Contract,
    policy: LatencyPolicy,
    *,
    repeats: int,
    batch: int,
) -> dict[str, dict[str, Any]]:
    """Per contender: each repeat's interval, the interval over all pairs of all repeats,
    the spread of the repeats' estimates, pooled percentiles and the raw samples."""
    done: dict[str, list[Any]] = {c.id: [] for c in contenders}
    failed: dict[str, str] = {}
    for r in range(repeats):
        k = r % max(1, len(contenders))
        for c in contenders[k:] + contenders[:k]:
            if c.id in failed:
                continue
            try:
                done[c.id].append(measure_pair(c.spec, reference, feed, contract, policy))
            except workers.WorkerFailed as exc:
                failed[c.id] = f"{exc.contender.name} {exc.stage}: {exc.reason}"[:400]
    out: dict[str, dict[str, Any]] = {}
    for c in contenders:
        if c.id in failed:
            out[c.id] = {"error": failed[c.id]}
        elif done[c.id]:
            out[c.id] = _summary(done[c.id], policy.confidence, batch)
    out["reference"] = _reference_summary(done, batch)
    return out


def _ms(blocks: list[list[float]]) -> list[list[float]]:
    return [[round(t * 1e3, 4) for t in b] for b in blocks]


def _summary(measured: list[Any], confidence: float, batch: int) -> dict[str, Any]:
    art = [b for m in measured for b in m.blocks.artifact]
    ref = [b for m in measured for b in m.blocks.reference]
    pooled = speedup_interval(ref, art, confidence)
    estimates = [m.blocks.speedup.estimate for m in measured]
    return {
        "speedup": dataclasses.asdict(pooled),
        "spread": {
            "min": min(estimates),
            "max": max(estimates),
            "max_deviation": max(abs(e / pooled.estimate - 1) for e in estimates),
        },
        "repeats": [
            {
                "speedup": dataclasses.asdict(m.blocks.speedup),
                "stopped": m.blocks.stopped,
                "seconds": round(m.blocks.seconds, 3),
                "load_s": list(m.load_s),
                "artifact_blocks_ms": _ms(m.blocks.artifact),
                "reference_blocks_ms": _ms(m.blocks.reference),
            }
            for m in measured
        ],
        "pooled": dataclasses.asdict(
            summarize([t for b in art for t in b], batch, keep_samples=False)
        ),
        "runner": measured[0].artifact,
        "reference_runner": measured[0].reference,
    }


def _reference_summary(done: dict[str, list[Any]], batch: int) -> dict[str, Any]:
    times = [t for ms in done.values() for m in ms for b in m.blocks.reference for t in b]
    if not times:
        return {}
    first = next(m for ms in done.values() for m in ms)
    return {
        "pooled": dataclasses.asdict(summarize(times, batch, keep_samples=False)),
        "runner": first.reference,
    }


# ----------------------------------------------------------------------------- parity


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


def olive_parity(runner: Runner, package: Path, manifest: Manifest) -> dict[str, Any]:
    """Olive's artifact against the package's reference outputs, by the package's own metrics,
    output kinds and int8 tolerance, on the same samples."""
    inputs = read_feeds_npz(package / "reference" / "inputs.npz")
    refs = read_feeds_npz(package / "reference" / "outputs.npz")
    outs = [runner.run(f) for f in inputs]
    kinds = {o.name: o.kind for o in manifest.contract.outputs}
    policy = manifest.policy.parity
    ok, per_output = compare_outputs(outs, refs, lambda name: policy.tolerance("int8", name), kinds)
    return {
        "status": "passed" if ok else "failed",
        "mode": "native",
        "samples": len(inputs),
        **_worst(per_output),
    }


def tile_batch(contract: Contract, feed: dict[str, np.ndarray], want: int) -> tuple[dict, int]:
    """`feed` repeated along the batch dim to the largest size <= `want` the contract admits
    (every input's first dim the same symbolic dim with a range); (feed, batch) or the feed
    unchanged with batch 1 when the model has no batch dim."""
    firsts = {s.shape[0] if s.shape else None for s in contract.inputs}
    dim = next(iter(firsts)) if len(firsts) == 1 else None
    if not isinstance(dim, str) or dim not in contract.dims:
        return feed, 1
    size = min(want, contract.dims[dim].max)
    if size <= 1 or any(v.shape[0] != 1 for v in feed.values()):
        return feed, 1
    return {k: np.repeat(v, size, axis=0) for k, v in feed.items()}, size
