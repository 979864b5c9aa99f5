"""The records modules hand each other: availability, parity and latency measurements, and what
each node of the build DAG produced. Typed, so no module reads another's dict by key or parses
another's wording."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from compiler.core.contract import Contract, ValueDomain
from compiler.core.host import HostInfo, Requirements
from compiler.core.latency import LatencyStats, SpeedupInterval
from compiler.core.parity import OutputParity, worst_output
from compiler.core.runtime import RunnerInfo
from compiler.core.settings import RuntimeSettings
from compiler.core.task import TaskScore
from compiler.core.tolerance import Precision

__all__ = [
    "GENERATED_DATA",
    "ArtifactMeasurements",
    "Availability",
    "CompileOutput",
    "DataOutput",
    "DataSource",
    "EmulationInfo",
    "LatencyRecord",
    "MeasuredOn",
    "NodeOutput",
    "NodeResult",
    "NormalizeOutput",
    "NormalizeRecord",
    "ParityMode",
    "ParityRecord",
    "ParityStatus",
    "PassOutput",
    "PassRecord",
    "ReferenceOutput",
    "RuntimeSettingsField",
    "ThroughputRecord",
    "TunedSettings",
    "TuningCandidate",
    "VerifyOutput",
    "tuned_runtime",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


RuntimeSettingsField = Annotated[RuntimeSettings, Field(discriminator="backend")]


class Availability(_Record):
    """Whether a backend (library or hardware) can build or run here; if not, why and how to
    get it. A missing backend makes its artifacts `skipped`, with `install` as the hint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ok: bool
    reason: str = ""
    install: str = ""


# --------------------------------------------------------------------------- measurements

ParityStatus = Literal["passed", "failed", "not-verified", "error"]
# the reason of a lossy artifact's not-verified record when its data was generated
GENERATED_DATA = "unverified: generated data"
# native: on a host the artifact targets; cross-host: a portable artifact of another arch run
# with this host's build of its runtime; emulated: the target arch's runtime under qemu.
ParityMode = Literal["native", "cross-host", "emulated", "none"]


class MeasuredOn(HostInfo):
    """The host a measurement was taken on, and when (UTC, ISO 8601)."""

    measured_at: str = ""


class EmulationInfo(_Record):
    qemu: str
    cpu: str
    runtime: str
    python: str


class ParityRecord(_Record):
    """Parity of one artifact on one host: per output, the metrics its kind is judged by
    (`OutputParity.checks`), and the task metric's scores when the build has one. `passed`
    needs every output to pass and the task (when it could be scored) to pass, or, for a lossy
    artifact, the task to decide (compiler/core/task.py `verdict`; `basis` then says so)."""

    status: ParityStatus
    precision: str = ""
    samples: int = 0
    mode: ParityMode = "none"
    note: str = ""  # plainly what was run where (cross-host and emulated checks)
    reason: str = ""  # why there is no verdict (not-verified, error)
    basis: str = ""  # what decided a verdict the outputs' closeness alone would not have
    reference: str = ""
    host: MeasuredOn | None = None
    outputs: dict[str, OutputParity] = Field(default_factory=dict)
    runtime_details: RunnerInfo = Field(default_factory=dict)
    emulation: EmulationInfo | None = None
    task: TaskScore | None = None

    @property
    def decisive(self) -> bool:
        return self.status in ("passed", "failed")

    @property
    def worst(self) -> tuple[str, OutputParity] | None:
        """The output closest to (or furthest past) its bounds: the one a report shows."""
        return worst_output(self.outputs)


# the host facts tuned settings hold on: where they differ, serving uses the core's defaults
TUNED_HOST_FIELDS = ("arch", "cpu_count", "cpu_model")
# other work keeping more than this share of the host's cores busy during a runtime-settings
# sweep makes its winner suspect: under contention fewer threads win (TunedSettings.busy)
BUSY_SHARE = 0.25


class TuningCandidate(_Record):
    """One runtime setting tried at build: timed against the artifact's default settings in
    one run (`speedup` = default time / candidate time, above 1: the candidate is faster)."""

    name: str  # "default", "intra_op_num_threads=1", ...
    settings: RuntimeSettingsField
    status: Literal["baseline", "measured", "crashed", "error", "skipped"] = "measured"
    reason: str = ""
    speedup: SpeedupInterval | None = None
    stopped: Literal["narrow", "slower", "budget", "max-pairs", ""] = ""
    seconds: float = 0.0


class TunedSettings(_Record):
    """Runtime settings chosen by measurement on the build host: a candidate is adopted only
    when its interval's lower bound is above 1 (noise never picks one). A measurement, outside
    the manifest's core: serving applies `settings` only on a host like `host`
    (`tuned_runtime`), the core's `default` elsewhere."""

    status: Literal["tuned", "skipped"] = "tuned"
    reason: str = ""  # why the sweep was skipped or cut short
    host: MeasuredOn
    default: RuntimeSettingsField  # the artifact's settings in the manifest's core
    adopted: str = "default"  # the name of the adopted candidate
    settings: RuntimeSettingsField  # the adopted candidate's settings
    candidates: list[TuningCandidate] = Field(default_factory=list)
    method: str = ""
    seconds: float = 0.0
    host_load: float | None = None  # the higher 1-minute load average, at start or end
    # CPUs' worth of other work on the `others_of` CPUs the build may use, the lower of two
    # short windows before and after the sweep while the build waited
    # (compiler/measure/contention.py); None: not known
    others_cpus: float | None = None
    others_of: int | None = None

    @property
    def cpus_watched(self) -> int:
        return self.others_of or self.host.cpu_count

    @property
    def busy(self) -> bool:
        """Swept while other work kept more than BUSY_SHARE of the cores busy: nothing is
        adopted from it (settings that win under contention, fewer threads, lose on a quiet
        host). Sweeps recorded before `others_cpus`: the load average above the cpu count
        (which counts the sweep's own workers' threads)."""
        if self.others_cpus is not None:
            return self.others_cpus > BUSY_SHARE * max(1, self.cpus_watched)
        return self.host_load is not None and self.host_load > max(1, self.host.cpu_count)

    def host_mismatch(self, host: HostInfo) -> str:
        """Why these settings do not hold on `host` ("" when they do)."""
        return "; ".join(
            f"{f} {getattr(host, f)!r} here, {getattr(self.host, f)!r} where tuned"
            for f in TUNED_HOST_FIELDS
            if getattr(host, f) != getattr(self.host, f)
        )


class ThroughputRecord(_Record):
    """Items per second at one batch size, the artifact next to the reference at the same
    batch in one run; `speedup` is the ratio of items/s (reference time / artifact time per
    paired block). `skipped`: the contract does not allow that batch (the reason says why)."""

    batch: int
    status: Literal["measured", "crashed", "error", "skipped"] = "measured"
    reason: str = ""
    items_per_s: float | None = None
    reference_items_per_s: float | None = None
    speedup: SpeedupInterval | None = None
    stopped: Literal["narrow", "slower", "budget", "max-pairs", ""] = ""
    seconds: float = 0.0


class LatencyRecord(_Record):
    """One artifact's latency next to the reference, each in a worker process of its own, in
    paired blocks on one host. `crashed`: the artifact's worker died or raised (a verdict on
    the artifact); `error`: nothing could be measured for another reason (the reference's
    worker died). `source` keeps a later `compile-pkg verify` apart from the build's own
    record, so serving's pick never changes because verify ran unless the caller asks."""

    host: MeasuredOn
    batch: int
    input_shapes: dict[str, list[int]]
    status: Literal["measured", "crashed", "error"] = "measured"
    reason: str = ""
    source: Literal["build", "verify"] = "build"
    runner: RunnerInfo = Field(default_factory=dict)
    reference_runner: RunnerInfo = Field(default_factory=dict)
    artifact: LatencyStats | None = None
    reference: LatencyStats | None = None
    speedup: SpeedupInterval | None = None
    speedup_vs_reference: float | None = None  # speedup.estimate (read by older tools)
    stopped: Literal["narrow", "slower", "budget", "max-pairs", ""] = ""
    seconds: float = 0.0  # wall time the measurement took, workers' start-up included
    method: str = ""
    host_load: float | None = None  # the higher 1-minute load average, at start or end
    # the runtime settings the sweep at build adopted (what `runner` ran), and items/s at the
    # config's serving batch sizes
    tuning: TunedSettings | None = None
    throughput: list[ThroughputRecord] = Field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.status == "measured" and self.artifact is not None

    @property
    def busy(self) -> bool:
        """Taken while other work kept every core busy: its interval may not hold."""
        return self.host_load is not None and self.host_load > max(1, self.host.cpu_count)


class ArtifactMeasurements(_Record):
    parity: list[ParityRecord] = Field(default_factory=list)
    latency: list[LatencyRecord] = Field(default_factory=list)


def tuned_runtime(
    runtime: RuntimeSettings, latency: Sequence[LatencyRecord], host: HostInfo
) -> tuple[RuntimeSettings, str]:
    """The settings to serve an artifact with on `host`, and why: the settings the build's
    sweep adopted when `host` is like the one it was measured on (same arch, cpu count and
    model) and they were tuned from these very defaults; else `runtime`, the core's."""
    tuned = next((r.tuning for r in reversed(latency) if r.source == "build" and r.tuning), None)
    if tuned is None or tuned.status != "tuned" or tuned.adopted == "default":
        return runtime, ""
    if tuned.default != runtime:
        return runtime, "the package's runtime settings: tuned ones were measured from others"
    mismatch = tuned.host_mismatch(host)
    if mismatch:
        return runtime, (
            f"the package's runtime settings: the tuned {tuned.adopted} was measured on "
            f"another host ({mismatch})"
        )
    chosen = next((c for c in tuned.candidates if c.name == tuned.adopted), None)
    gain = f", {chosen.speedup.describe()} over the defaults" if chosen and chosen.speedup else ""
    return tuned.settings, f"runtime settings tuned on a host like this: {tuned.adopted}{gain}"


# --------------------------------------------------------------------------- node outputs

DataSource = Literal["user", "generated"]


class NormalizeRecord(_Record):
    named_dims: dict[str, str] = Field(default_factory=dict)
    opset_source: int = 0
    opset_upgraded_to: int | None = None
    opset_imports: str = ""  # duplicates merged, the ONNX domain first: before -> after
    nodes_sorted: bool = False  # the source's nodes were not in topological order
    nodes_renamed: int = 0  # nodes that shared a name with an earlier one, renamed
    # initializers the source also listed as graph inputs, taken out of the inputs
    initializer_inputs_dropped: int = 0
    functions_inlined: list[str] = Field(default_factory=list)  # model-local, domain:name
    functions_kept: str = ""  # model-local functions left as they are, and why
    # graph outputs that declared no shape (not even a rank), given the inferred one
    output_shapes_inferred: list[str] = Field(default_factory=list)
    # graph outputs whose declared shape the reference does not return, declared as returned
    output_shapes_corrected: list[str] = Field(default_factory=list)
    # dilated convolutions whose auto_pad SAME_* (stride 1) became explicit pads: ONNX Runtime
    # refuses SAME with dilation
    same_pads_made_explicit: list[str] = Field(default_factory=list)


class NormalizeOutput(_Record):
    kind: Literal["normalize"] = "normalize"
    record: NormalizeRecord
    contract: Contract
    opset: int
    ir_version: int
    producer: str = ""
    # what the source computes in: int8 when it already holds quantized ops (QDQ, QOperator),
    # fp16/bf16 when most weights are; every artifact computes at least as lossily, and the
    # reference does the same
    precision: Precision = "fp32"


class DataOutput(_Record):
    """The feeds parity is judged on (`samples`) and calibration reads, and where each came
    from. A lossy artifact calibrated or judged on generated feeds is `unverified: generated
    data` (`judged_on_generated`); the two sets never share a feed."""

    kind: Literal["data"] = "data"
    samples: int
    samples_source: DataSource
    calibration: int
    calibration_source: DataSource
    samples_digest: str
    labels: bool = Field(default=False, description="labels.json holds one label per sample")
    split_from: int = Field(
        default=0, description="feeds in the one user source split into calibration + samples"
    )
    overlap_removed: int = Field(
        default=0, description="sample feeds dropped because calibration holds them too"
    )
    domains: dict[str, ValueDomain] = Field(
        default_factory=dict, description="the value domains generated feeds were drawn from"
    )

    @property
    def generated(self) -> tuple[Literal["samples", "calibration"], ...]:
        """Which of the two sets were generated, not the user's."""
        sets: tuple[Literal["samples", "calibration"], ...] = ("samples", "calibration")
        sources = (self.samples_source, self.calibration_source)
        return tuple(s for s, src in zip(sets, sources, strict=True) if src == "generated")

    def judged_on_generated(self, *, lossy: bool, calibrated: bool) -> bool:
        """True when an artifact's verdict would rest on generated data: a lossy artifact
        judged on generated samples, or calibrated (any pass reading calibration) on
        generated calibration feeds."""
        if not lossy:
            return False
        return "samples" in self.generated or (calibrated and "calibration" in self.generated)


class ReferenceOutput(_Record):
    kind: Literal["reference"] = "reference"
    runtime: str
    provider: str
    precision: str
    samples: int


class PassRecord(_Record):
    """What a pass did. `details` are the pass's own facts, for reports only: no module reads
    them by key (what others need is a typed field here)."""

    name: str
    version: str
    nodes_before: int
    nodes_after: int
    bytes_before: int
    bytes_after: int
    ops_before: dict[str, int] = Field(default_factory=dict)
    ops_after: dict[str, int] = Field(default_factory=dict)
    skipped: str = ""
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, JsonValue] = Field(default_factory=dict)


class PassOutput(_Record):
    kind: Literal["pass"] = "pass"
    record: PassRecord


class CompileOutput(_Record):
    kind: Literal["compile"] = "compile"
    backend: str
    backend_version: dict[str, str] = Field(default_factory=dict)
    files: list[str]
    runtime: RuntimeSettingsField
    requirements: Requirements
    precision: str
    notes: list[str] = Field(default_factory=list)
    portable: bool = False
    status: Literal["built", "deferred"] = "built"
    contract: Contract | None = None  # the artifact's own, when narrower than the package's


class VerifyOutput(_Record):
    kind: Literal["verify"] = "verify"
    parity: ParityRecord
    latency: LatencyRecord | None = None
    # the runtime settings the verdict holds for, where they are not the built ones (an
    # OpenVINO artifact right only as built: static_shapes 0; compiler/measure/verify.py)
    runtime: RuntimeSettingsField | None = None


NodeOutput = Annotated[
    NormalizeOutput | DataOutput | ReferenceOutput | PassOutput | CompileOutput | VerifyOutput,
    Field(discriminator="kind"),
]

NodeStatus = Literal["ran", "cached", "failed", "skipped"]
_O = TypeVar("_O", bound=BaseModel)


class NodeResult(_Record):
    """One node of a build: what happened, and where its output lives in the cache."""

    status: NodeStatus
    output: NodeOutput | None = None
    out: Path | None = None
    digest: str = ""
    key: str = ""
    seconds: float = 0.0
    reason: str = ""
    install: str = ""  # a skip for a missing backend: how to get it
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("ran", "cached")

    def expect(self, kind: type[_O]) -> _O:
        """This node's output as `kind`; a node that did not produce one is a caller's bug."""
        if not isinstance(self.output, kind):
            raise TypeError(
                f"expected a {kind.__name__}, node output is {type(self.output).__name__}"
            )
        return self.output
