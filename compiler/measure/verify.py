"""Check one artifact on this host: parity against the stored reference outputs, and latency
interleaved with the reference model (the build's verify nodes also sweep runtime settings,
compiler/measure/tuning.py, and time throughput at the serving batch sizes,
compiler/measure/throughput.py). Used by the build's verify nodes and by `compile-pkg verify`.

Where an artifact's requirements do not match the host: if only the CPU architecture
differs and its format is portable (ONNX, OpenVINO IR), it is run with this host's build of
its runtime and the record says so (mode "cross-host"); otherwise nothing is measured and
the record says why (status "not-verified").
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import short_message
from compiler.core.feeds import Feeds
from compiler.core.host import HostInfo, Requirements
from compiler.core.isa import int8_fit
from compiler.core.parity import (
    SHAPE_MISMATCH,
    Check,
    IndexScores,
    OutputParity,
    compare_outputs,
    judge,
)
from compiler.core.policies import LatencyPolicy
from compiler.core.records import (
    GENERATED_DATA,
    LatencyRecord,
    MeasuredOn,
    ParityMode,
    ParityRecord,
    VerifyOutput,
)
from compiler.core.settings import OpenVinoSettings, RuntimeSettings
from compiler.core.task import score_task, task_decides, verdict
from compiler.core.tolerance import ParityPolicy
from compiler.measure.throughput import accepted, measure_throughput
from compiler.measure.timing import measure_latency as time_latency
from compiler.measure.tuning import TUNABLE, skipped_tuning, tune
from compiler.measure.workers import Contender
from targets.runner import Runner, open_runner

__all__ = [
    "ServeMeasures",
    "judge_outputs",
    "measured_on",
    "now_utc",
    "unverified_on_few_rows",
    "unverified_on_generated",
    "verify_artifact",
]

REFERENCE = "normalized fp32 model on onnxruntime CPU"


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def measured_on(host: HostInfo) -> MeasuredOn:
    """The host a measurement names, stamped with the time (measurements are outside the
    hashed core, so a host name there never makes two builds differ)."""
    return MeasuredOn(**host.model_dump(), measured_at=now_utc())


def judge_outputs(
    outs: Sequence[Feeds],
    ref_outputs: Sequence[Feeds],
    contract: Contract,
    precision: str,
    parity: ParityPolicy,
    labels: Sequence[Any] | None = None,
    scores: Sequence[Mapping[str, IndexScores]] | None = None,
) -> ParityRecord:
    """The parity record of an artifact's outputs: each output judged by its kind's metrics
    and the precision's tolerance, and the task metric when the policy has one. `scores`:
    the reference's scores behind index outputs (the reference folder's SCORES_FILE)."""
    kinds = {o.name: o.kind for o in contract.outputs}
    _, per_output = compare_outputs(
        outs, ref_outputs, lambda name: parity.tolerance(precision, name), kinds, scores
    )
    if parity.task is None:
        for name in contract.data_sized_outputs() & set(per_output):
            m = per_output[name]
            if m.error.startswith(SHAPE_MISMATCH):
                hint = (
                    f"{m.error} ('{name}' has as many rows as the data gives, e.g. the "
                    "detections a non-maximum suppression keeps: one more or fewer fails "
                    "any comparison of outputs; give the model's task metric, "
                    "parity.task.metric, and labelled samples to judge it by its job)"
                )
                per_output[name] = dataclasses.replace(m, failures=(hint,))
    if parity.task is None and _all_empty(outs) and _all_empty(ref_outputs):
        return ParityRecord(
            status="not-verified",
            precision=precision,
            samples=len(outs),
            reference=REFERENCE,
            outputs=per_output,
            reason="nothing to compare: every output is empty on every sample, the "
            "reference's and the artifact's (a detector that finds nothing in generated "
            "data); give samples the model finds something in with --sample-data DIR",
        )
    task = score_task(parity.task, outs, ref_outputs, labels) if parity.task else None
    passed, basis = verdict(per_output, task, precision, contract.data_sized_outputs())
    return ParityRecord(
        status="passed" if passed else "failed",
        precision=precision,
        samples=len(outs),
        reference=REFERENCE,
        outputs=per_output,
        task=task,
        basis=basis,
    )


def _all_empty(samples: Sequence[Feeds]) -> bool:
    """Whether every output of every sample has no element: agreement there shows nothing."""
    return all(np.asarray(v).size == 0 for feed in samples for v in feed.values())


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
    labels: Sequence[Any] | None = None,
    serve: ServeMeasures | None = None,
    scores: Sequence[Mapping[str, IndexScores]] | None = None,
) -> VerifyOutput:
    """Parity (and, natively, latency) of one artifact; `labels` (one per sample) let the
    policy's task metric score it; `serve`: the runtime-settings sweep and the batch sizes
    whose throughput to measure (none by default)."""
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
        # said of the building host: the record travels to serving hosts that may have it all
        reason = f"cannot run on the build host ({host.describe()}): " + "; ".join(
            m.message for m in mismatches
        )
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
    # compiled blobs shared by every process that runs this artifact here (OpenVINO: the
    # parity run's compiles, as built and for the sample shape, are the timing workers'
    # imports); keyed by the runtime on the model's content and config, removed after
    blobs = tempfile.TemporaryDirectory(prefix="compile-pkg-blobs-")
    cache = Path(blobs.name) if backend == "openvino" else None

    def open_again(settings: RuntimeSettings) -> Runner:
        threads = latency.threads or None
        return open_runner(
            backend, artifact_dir, settings, contract, threads=threads, cache_dir=cache
        )

    try:
        runner = open_again(runtime)
        with runner:
            # each run's background work done before the next (OpenVINO's compile for a shape
            # seen twice): which samples run on it does not depend on how fast it compiled
            outs = [_run_synced(runner, feed) for feed in inputs]
            record = judge_outputs(outs, ref_outputs, contract, precision, parity, labels, scores)
            static, served = "", runtime
            if isinstance(runtime, OpenVinoSettings) and runtime.static_shapes:
                if contract.input_dims() and record.status in ("passed", "failed"):

                    def judged(outs: list[dict[str, np.ndarray]]) -> ParityRecord:
                        return judge_outputs(
                            outs, ref_outputs, contract, precision, parity, labels, scores
                        )

                    record, static, served = _judged_per_shape(
                        runner, record, runtime, judged, inputs, outs, open_again
                    )
            saturation = _saturation_note(requirements, host)
            note = "; ".join(n for n in (note, static, saturation) if n)
            record = record.model_copy(update={"mode": mode, "note": note, "host": on})
            timing = None
            if measure_latency and mode == "native":
                runner.close()  # the timing workers load their own; this one would sit idle
                artifact = Contender(
                    str(artifact_dir.name), backend, artifact_dir, served, cache_dir=cache
                )
                timing = _timing(artifact, record, inputs, contract, ref_model, latency, on, serve)
    except Exception as exc:  # a runtime failing on this artifact is a verdict, not a crash
        reason = f"could not run: {short_message(exc)}"
        record = ParityRecord(
            status="error", reason=reason, precision=precision, host=on, mode=mode
        )
        return VerifyOutput(parity=record)
    finally:
        blobs.cleanup()
    changed = served if served != runtime else None
    return VerifyOutput(parity=record, latency=timing, runtime=changed)


def _saturation_note(requirements: Requirements, host: HostInfo) -> str:
    """What a verdict on this host says of an int8 artifact whose sums may saturate here
    and not on the hosts it is meant for (compiler/core/isa.py); '' for any other."""
    flavour = requirements.int8
    if flavour is None or requirements.arch != host.arch:
        return ""
    cls = host.isa_class
    if int8_fit(flavour, cls) != "saturates":
        return ""
    meant = ", ".join(requirements.meant_for) or "hosts with int8 dot products"
    return (
        f"{flavour} int8 may saturate on {cls} (no VNNI): this verdict is this class's; "
        f"on a host it is meant for ({meant}) `compile-pkg verify --update` records that "
        "host's own"
    )


def _run_synced(runner: Runner, feed: Feeds) -> dict[str, np.ndarray]:
    out = runner.run(feed)
    runner.sync()
    return out


_FOLDS = (
    "OpenVINO folds what a fixed shape makes constant, and there computed otherwise (T5's "
    "position bias added to its mask term, (1 - mask) * -3.4e38, was lost)"
)
_STATIC_FAILED = (
    "failed on the compiles OpenVINO made for the samples' shapes (a shape seen twice gets "
    f"one, as in serving), and as built too; {_FOLDS}"
)
_STATIC_OFF = (
    "passed as built, with OpenVINO's compiles for a shape off (static_shapes 0 in its "
    "runtime settings): on those compiles (a shape seen twice gets one) the samples failed; "
    f"{_FOLDS}"
)


def _judged_per_shape(
    runner: Runner,
    record: ParityRecord,
    runtime: OpenVinoSettings,
    judged: Callable[[list[dict[str, np.ndarray]]], ParityRecord],
    inputs: list[Feeds],
    first: list[dict[str, np.ndarray]],
    open_again: Callable[[RuntimeSettings], Runner],
) -> tuple[ParityRecord, str, RuntimeSettings]:
    """The verdict on an OpenVINO artifact that compiles a shape seen twice on its own, a
    note, and the runtime settings it holds for. A verdict that passed is judged again with
    every sample on its shape's compile (`_on_shape_compiles`); where that fails, or the
    verdict failed, the samples run on the model as built alone: passing there, the artifact
    is served so (static_shapes 0) and says why; failing, the failure stands."""
    if record.status == "passed":
        on_compiles = judged(_on_shape_compiles(runner, inputs, first))
        if on_compiles.status != "failed":
            return record, "", runtime
    else:
        on_compiles = record
    as_built = dataclasses.replace(runtime, static_shapes=0)
    with open_again(as_built) as plain:
        alone = judged([_run_synced(plain, feed) for feed in inputs])
    if alone.status == "passed":
        return alone, _STATIC_OFF, as_built
    if record.status == "passed":  # it failed on the compiles alone: say so
        return on_compiles, _STATIC_FAILED, runtime
    return record, "", runtime


def _on_shape_compiles(
    runner: Runner, inputs: list[Feeds], first: list[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Each sample's outputs once its shape has a compile of its own (OpenVINO's static
    shapes: a shape seen twice, up to the artifact's limit). The first pass (`first`) ran a
    shape's first two samples on the model as built and the rest on its compile: those are
    kept, and the others run, wait for their shape's compile, and run again. A shape met
    once or twice never ran on its own compile, which serving switches to."""
    shapes = [tuple(sorted((k, np.shape(v)) for k, v in feed.items())) for feed in inputs]
    many = Counter(shapes)
    met: Counter[tuple[Any, ...]] = Counter()
    outs = []
    for feed, shape, out in zip(inputs, shapes, first, strict=True):
        met[shape] += 1
        if many[shape] >= 3 and met[shape] >= 3:
            outs.append(out)
            continue
        _run_synced(runner, feed)
        outs.append(_run_synced(runner, feed))
    return outs


@dataclass(frozen=True)
class ServeMeasures:
    """What verify measures for serving besides batch-1 latency: a sweep of runtime settings
    (`tuning_s` seconds at most; 0: none) and items/s at `batch_sizes`; `accepts`: the
    artifact's own contract when narrower than the package's."""

    tuning_s: float = 0.0
    batch_sizes: tuple[int, ...] = ()
    accepts: Contract | None = None


def _timing(
    artifact: Contender,
    parity: ParityRecord,
    inputs: list[Feeds],
    contract: Contract,
    ref_model: Path | None,
    policy: LatencyPolicy,
    on: MeasuredOn,
    serve: ServeMeasures | None,
) -> LatencyRecord:
    """Latency with the settings the sweep adopted (the artifact's own without one), and
    throughput at the serving batch sizes with the same settings."""
    serve = serve or ServeMeasures()
    tuning = None
    if serve.tuning_s > 0 and artifact.backend in TUNABLE:
        if parity.status != "passed":
            why = f"parity {parity.status}: settings are tuned only for artifacts that pass"
            tuning = skipped_tuning(artifact.runtime, on, why)
        else:
            tuning = tune(artifact, inputs[0], contract, policy, serve.tuning_s, on)
        artifact = dataclasses.replace(artifact, runtime=tuning.settings)
    timing = time_latency(artifact, inputs[0], contract, ref_model, policy, on)
    served = accepted(contract, serve.accepts)
    throughput = measure_throughput(
        artifact, inputs, served, ref_model, policy, serve.batch_sizes, timing
    )
    return timing.model_copy(update={"tuning": tuning, "throughput": throughput})


def unverified_on_generated(
    measured: VerifyOutput,
    precision: str,
    generated: tuple[str, ...],
    calibrated: bool,
    parity: ParityPolicy,
) -> VerifyOutput:
    """A lossy artifact judged on generated samples, or calibrated on generated feeds, has no
    verdict: numbers on random inputs say nothing about the model's task. Its metrics stay in
    the record; its status becomes not-verified, so serving does not pick it (unless allowed).
    `precision`: the precision it is judged as on generated data (pipeline/variant.py,
    judged_precision); `generated`: which of "samples"/"calibration" were generated;
    `calibrated`: whether one of the artifact's passes read calibration data.

    An artifact judged as not lossy whose record was judged by a lossy tolerance (the fp32
    variant of an int8 source, on another backend than the reference's: OpenVINO's int8
    kernels round otherwise than ONNX Runtime's) keeps its verdict only where its outputs
    also meet the fp32 tolerance: a pass that needed int8's tolerance on random inputs says
    nothing of the task either."""
    reasons = {
        "samples": "judged on generated samples",
        "calibration": "calibrated on generated feeds",
    }
    what = [reasons[g] for g in generated if g == "samples" or calibrated]
    if not what or not measured.parity.decisive:
        return measured
    if precision == "fp32":
        # a half-precision source's reference rounds in fp16 itself: its artifacts are left
        # to fp16's tolerance
        if (
            "samples" not in generated
            or measured.parity.status != "passed"
            or measured.parity.precision != "int8"
        ):
            return measured
        departs = [
            f"'{name}': {'; '.join(why)}"
            for name, m in measured.parity.outputs.items()
            if (why := judge(m, parity.tolerance("fp32", name)))
        ]
        if not departs:
            return measured
        reason = (
            f"{GENERATED_DATA}: the artifact runs the source's {measured.parity.precision} "
            "ops with other kernels than the reference's, judged on generated samples: it "
            f"meets the {measured.parity.precision} tolerance there but "
            f"departs from the reference beyond fp32's ({departs[0]}); give real inputs with "
            "--sample-data DIR (or --data-loader module:function) to judge it by the model's job"
        )
    else:
        reason = (
            f"{GENERATED_DATA}: {'an' if precision in ('int8', 'fp16', 'fp32') else 'a'} "
            f"{precision} artifact {' and '.join(what)} (on those it "
            f"{measured.parity.status}); give real inputs with --sample-data DIR "
            "(or --calibration-data DIR, or --data-loader module:function)"
        )
    parity_record = measured.parity.model_copy(update={"status": "not-verified", "reason": reason})
    return measured.model_copy(update={"parity": parity_record})


# the class-output checks whose bound is a rate over rows
RATE_CHECKS = (
    "top1_decided",
    "top1_uncommon",
    "agreement",
    "agreement_decided",
    "agreement_uncommon",
)


def _rows_needed(bound: float) -> int:
    """Rows before one flip can show a rate below `bound`: 1 / (1 - bound), 20 for 0.95."""
    return math.ceil(1.0 / (1.0 - bound) - 1e-9)


def _rows_of(m: OutputParity, check: Check) -> int:
    return m.uncommon_rows if check.metric.endswith("_uncommon") else m.rows


def unverified_on_few_rows(measured: VerifyOutput, precision: str) -> VerifyOutput:
    """A lossy artifact that passed a top-1 agreement bound on fewer rows than the bound can
    tell apart has no verdict: 4 of 4 rows agreeing cannot show that 95% of inputs will (a
    bf16 file-type classifier passed on 4 samples and misread 2 of 20 files). A failure on
    few rows stands: a flip seen is evidence."""
    parity = measured.parity
    if precision == "fp32" or parity.status != "passed":
        return measured
    task = parity.task if task_decides(parity.task, precision) else None
    short = [
        f"{name}: {c.metric} {c.value:.3f} >= {c.bound} on {_rows_of(m, c)} row(s), needs "
        f"{_rows_needed(c.bound)}"
        for name, m in parity.outputs.items()
        # a task scored on enough labelled samples is the evidence for what it reads (task.py)
        if task is None or not task.reads(name)
        for c in m.checks
        if c.metric in RATE_CHECKS and c.bound < 1.0 and _rows_of(m, c) < _rows_needed(c.bound)
    ]
    if not short:
        return measured
    reason = (
        f"too few samples for a verdict: {'; '.join(short)}; give more samples with "
        "--sample-data DIR (or lower parity.tolerances.<precision>.min_top1)"
    )
    judged = parity.model_copy(update={"status": "not-verified", "reason": reason})
    return measured.model_copy(update={"parity": judged})
