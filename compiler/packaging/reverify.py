"""`compile-pkg verify PKG`: a release gate. Re-check every artifact's files, re-measure parity
against the stored reference outputs and latency next to the stored reference model on this
host, and judge each artifact against the verdict the package recorded.

An artifact meets its recorded verdict when it passes as it did, or fails as it already did
at build time (a build-time failure is not a new one); it is **newly failed** when its files
no longer match, or it fails parity or crashes where it had passed (or had no verdict), and
**regressed** when its speedup interval now lies below the recorded one, on a host like the
build host, by more than the policy's `regression_margin` (latency taken while other work
kept every core busy is reported, not judged: its interval may not hold). The package is never
rewritten: the records go to a file beside it (compiler/serving/verify_records.py), or with
`update` into the manifest's measurements (latency records tagged `source: verify`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnx
from pydantic import BaseModel, ConfigDict, ValidationError

from compiler.core.errors import ConfigError, IntegrityError, PackageError, short_message
from compiler.core.feeds import read_feeds_npz, read_labels
from compiler.core.host import INTERESTING_FLAGS, HostInfo, probe_host
from compiler.core.latency import LatencyStats, SpeedupInterval
from compiler.core.parity import read_scores
from compiler.core.records import (
    LatencyRecord,
    MeasuredOn,
    ParityRecord,
    ParityStatus,
    VerifyOutput,
)
from compiler.measure.verify import (
    measured_on,
    unverified_on_few_rows,
    unverified_on_generated,
    verify_artifact,
)
from compiler.packaging.emulated import verify_emulated
from compiler.packaging.write import rewrite_manifest
from compiler.pipeline.config import BuildConfig
from compiler.pipeline.graph import build_graph
from compiler.pipeline.normalize import MODEL_FILE
from compiler.pipeline.variant import judged_precision
from compiler.serving.integrity import PackageCheck, VerifiedCopy, check_package
from compiler.serving.manifest import ArtifactEntry, Manifest, read_manifest
from compiler.serving.signing import (
    SignatureStatus,
    TrustPolicy,
    check_signatures,
    native_refusal,
)
from compiler.serving.verify_records import (
    VerifyRecords,
    default_records_path,
    read_verify_records,
)
from passes.base import source_precision
from passes.registry import PASSES

__all__ = [
    "GPU_RECORD_SCHEMAS",
    "ArtifactCheck",
    "VerifyReport",
    "VerifyVerdict",
    "judge_latency",
    "import_gpu_records",
    "judge_parity",
    "verify_package",
]

VerifyVerdict = Literal[
    "ok", "improved", "known-failure", "not-checked", "regressed", "newly-failed"
]
BAD: tuple[VerifyVerdict, ...] = ("regressed", "newly-failed")
_RANK: dict[VerifyVerdict, int] = {
    "not-checked": 0,
    "ok": 1,
    "improved": 1,
    "known-failure": 2,
    "regressed": 3,
    "newly-failed": 4,
}


class ArtifactCheck(BaseModel):
    """One artifact's re-verification on this host, and its verdict against the package's."""

    model_config = ConfigDict(extra="forbid")
    id: str
    verdict: VerifyVerdict
    why: str
    files: str = "ok"  # "ok", "-" (not checked), or why they failed
    recorded_parity: str = "-"
    parity: ParityRecord | None = None
    emulated: ParityRecord | None = None
    recorded_speedup: SpeedupInterval | None = None
    latency: LatencyRecord | None = None

    @property
    def bad(self) -> bool:
        return self.verdict in BAD


@dataclass(frozen=True)
class _Gate:
    """What every artifact's check consults: the trust policy, the package's signatures and
    the whole-file-set check (files are hashed once, artifacts then read their problems)."""

    trust: TrustPolicy
    files: PackageCheck
    manifest: Manifest
    package: Path

    @property
    def signatures(self) -> SignatureStatus:
        return check_signatures(self.package, self.manifest, self.trust)


class VerifyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    package: str
    core_sha256: str
    host: MeasuredOn
    records: str  # the verify records file written, or "manifest" (--update)
    ok: bool
    regressions: list[str]  # ids whose verdict is regressed or newly-failed
    artifacts: list[ArtifactCheck]


def _recorded_parity(m: Manifest, aid: str, mode: str) -> str:
    """The package's verdict in `mode` (native, cross-host, emulated), else in any mode."""
    records = m.measured(aid).parity
    for pool in ([r for r in records if r.mode == mode], records):
        for r in reversed(pool):
            if r.status in ("passed", "failed", "error"):
                return r.status
    return "not-verified"


def judge_parity(recorded: str, new: ParityRecord) -> tuple[VerifyVerdict, str]:
    what = f"parity {new.status} ({new.mode}); recorded {recorded}"
    if new.status == "not-verified":
        return "not-checked", f"not run here: {new.reason}"
    if new.status == "passed":
        return ("improved" if recorded in ("failed", "error") else "ok"), what
    if recorded in ("failed", "error"):
        return "known-failure", what
    why = new.reason or "; ".join(f for o in new.outputs.values() for f in o.failures)
    return "newly-failed", f"{what}: {why}" if why else what


def _alike(a: MeasuredOn, b: HostInfo) -> bool:
    return (a.arch, a.cpu_model, a.cpu_count, sorted(a.isa)) == (
        b.arch,
        b.cpu_model,
        b.cpu_count,
        sorted(b.isa),
    ) and [g.name for g in a.gpus] == [g.name for g in b.gpus]


def _recorded_latency(m: Manifest, aid: str, host: HostInfo) -> LatencyRecord | None:
    """The build's latest latency record from a host like this one."""
    alike = [r for r in m.measured(aid).latency if r.source == "build" and _alike(r.host, host)]
    return alike[-1] if alike else None


def judge_latency(
    recorded: LatencyRecord | None, new: LatencyRecord, margin: float
) -> tuple[VerifyVerdict, str]:
    if new.status == "crashed":
        if recorded is not None and recorded.status == "crashed":
            return "known-failure", f"crashed while timed, as at build: {new.reason}"
        return "newly-failed", f"crashed while timed: {new.reason}"
    if new.speedup is None or recorded is None or recorded.speedup is None:
        return "ok", "latency not compared: no build record from a host like this"
    now, then = new.speedup, recorded.speedup
    busy = [r for r in (recorded, new) if r.busy]
    if busy:
        load = ", ".join(f"{r.source} {r.host_load:.1f}" for r in busy)
        return "ok", (
            f"latency not judged: the host was busy (load average {load} on "
            f"{new.host.cpu_count} CPUs); speedup {now.describe()} now, {then.describe()} at build"
        )
    if now.high < then.low * (1.0 - margin):
        return "regressed", (
            f"speedup {now.describe()} now, {then.describe()} at build: slower beyond "
            f"the intervals and the {margin:.0%} margin"
        )
    return "ok", f"speedup {now.describe()} (build {then.describe()})"


def _worst(*verdicts: tuple[VerifyVerdict, str]) -> tuple[VerifyVerdict, str]:
    verdict = max((v for v, _ in verdicts), key=lambda v: _RANK[v])
    return verdict, "; ".join(w for v, w in verdicts if w and _RANK[v] == _RANK[verdict])


def _check(
    package: Path,
    m: Manifest,
    a: ArtifactEntry,
    host: HostInfo,
    reference: Path,
    gate: _Gate,
    measure_latency: bool,
    judged: Mapping[str, str],
) -> ArtifactCheck:
    if a.status != "built":
        reason = f"{a.status} at build" + (f": {a.reason}" if a.reason else "")
        return ArtifactCheck(id=a.id, verdict="not-checked", why=reason, files="-")
    refusal = native_refusal(a, gate.signatures, gate.trust)
    if refusal:
        return ArtifactCheck(id=a.id, verdict="not-checked", why=refusal, files="-")
    problems = gate.files.for_artifact(a.id)
    if problems:
        why = str(gate.files.error(problems))
        record = ParityRecord(status="error", reason=why, host=measured_on(host))
        return ArtifactCheck(id=a.id, verdict="newly-failed", why=why, files=why, parity=record)
    if a.requirements is None or a.runtime is None:
        raise PackageError(f"{package}: {a.id} is built but records no requirements or runtime")
    ref_model = reference / MODEL_FILE
    try:
        copy = VerifiedCopy(package, a)
    except IntegrityError as exc:  # changed since the whole-package check
        record = ParityRecord(status="error", reason=str(exc), host=measured_on(host))
        return ArtifactCheck(
            id=a.id, verdict="newly-failed", why=str(exc), files=str(exc), parity=record
        )
    with copy:
        out = verify_artifact(
            backend=a.backend,
            runtime=a.runtime,
            requirements=a.requirements,
            portable=a.portable,
            artifact_dir=copy.artifact_dir,
            precision=a.precision,
            contract=m.contract,
            inputs=read_feeds_npz(reference / "inputs.npz"),
            ref_outputs=read_feeds_npz(reference / "outputs.npz"),
            ref_model=ref_model if ref_model.is_file() else None,
            parity=m.policy.parity,
            latency=m.policy.latency,
            host=host,
            measure_latency=measure_latency,
            # the task metric judges here as at build (a lossy artifact it decided there)
            labels=read_labels(reference / "labels.json") if m.policy.parity.task else None,
            scores=read_scores(reference),
        )
    out = _as_the_build_rules(m, a, out, judged)
    recorded = _recorded_parity(m, a.id, out.parity.mode)
    verdicts = [judge_parity(recorded, out.parity)]
    latency = out.latency.model_copy(update={"source": "verify"}) if out.latency else None
    before = _recorded_latency(m, a.id, host)
    if latency is not None and out.parity.status not in ("failed", "error"):
        verdicts.append(judge_latency(before, latency, m.policy.latency.regression_margin))
    verdict, why = _worst(*verdicts)
    return ArtifactCheck(
        id=a.id,
        verdict=verdict,
        why=why,
        recorded_parity=recorded,
        parity=out.parity,
        recorded_speedup=before.speedup if before else None,
        latency=latency,
    )


def _as_the_build_rules(
    m: Manifest, a: ArtifactEntry, out: VerifyOutput, judged: Mapping[str, str]
) -> VerifyOutput:
    """What the build's rules leave of a measured verdict: no verdict on a lossy artifact
    judged on generated data, or that passed a top-1 bound on too few rows."""
    generated = tuple(
        g
        for g, src in (
            ("samples", m.reference.samples_source),
            ("calibration", m.reference.calibration_source),
        )
        if src == "generated"
    )
    calibrated = any(PASSES[p].uses_calibration for p in a.passes if p in PASSES)
    lossy = judged.get(a.id, a.precision)
    out = unverified_on_generated(out, lossy, generated, calibrated, m.policy.parity)
    return unverified_on_few_rows(out, lossy)


def _judged_precisions(m: Manifest, ref_model: Path) -> dict[str, str]:
    """Artifact id -> the precision the build judged it by on generated data
    (pipeline/variant.py, judged_precision), from the variant's own precision (the recorded
    config) and the reference model's. Empty where either cannot be read (a config from
    another version, no reference model): each artifact then keeps its recorded precision,
    never looser than the build."""
    try:
        config = BuildConfig.model_validate(m.provenance.config)
        own = {
            v.id: v.config.precision for v in build_graph(config, list(config.targets)).artifacts
        }
        source = source_precision(onnx.load(str(ref_model), load_external_data=False))
    except (ValidationError, KeyError, ValueError, OSError):
        return {}
    return {
        a.id: judged_precision(a.precision, own[a.id], source) for a in m.artifacts if a.id in own
    }


def _emulated(
    package: Path, m: Manifest, arch: str, checks: dict[str, ArtifactCheck], trust: TrustPolicy
) -> None:
    """Add the emulated parity of `arch` artifacts to their checks (parity only)."""
    for row in verify_emulated(package, arch, trust=trust):
        recorded = _recorded_parity(m, row.id, "emulated")
        judged = judge_parity(recorded, row.parity)
        c = checks[row.id]
        verdict, why = _worst((c.verdict, c.why), judged)
        checks[row.id] = c.model_copy(
            update={"emulated": row.parity, "verdict": verdict, "why": why}
        )


def _writable(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(
            f"{path}: cannot write the verify records there ({parent} is not a writable "
            "folder); give another place with --records FILE, or --update to record into "
            "the package"
        )


def verify_package(
    package: Path,
    *,
    measure_latency: bool = True,
    records: Path | None = None,
    update: bool = False,
    emulate: str | None = None,
    trust: TrustPolicy | None = None,
) -> VerifyReport:
    """Re-verify every artifact of `package` on this host, record, and judge (see above)."""
    m = read_manifest(package)
    target = None if update else (records or default_records_path(package))
    if target is not None:
        _writable(target)
    host = probe_host()
    gate = _Gate(trust or TrustPolicy.from_env(), check_package(package, m), m, package)
    outside = gate.files.outside_artifacts
    if outside:  # a changed reference or report would make every verdict meaningless
        raise gate.files.error(outside)
    with VerifiedCopy(package, m.reference) as reference:
        judged = _judged_precisions(m, reference.artifact_dir / MODEL_FILE)
        checks = {
            a.id: _check(package, m, a, host, reference.artifact_dir, gate, measure_latency, judged)
            for a in m.artifacts
        }
    if emulate:
        _emulated(package, m, emulate, checks, gate.trust)
    _record(package, m, list(checks.values()), target)
    bad = [c.id for c in checks.values() if c.bad]
    return VerifyReport(
        package=str(package),
        core_sha256=m.core_sha256,
        host=measured_on(host),
        records=str(target) if target is not None else "manifest",
        ok=not bad,
        regressions=bad,
        artifacts=list(checks.values()),
    )


def _record(package: Path, m: Manifest, checks: list[ArtifactCheck], target: Path | None) -> None:
    """Append this run's records to the records file, or (`update`) to the manifest."""
    if target is None:
        for c in checks:
            meas = m.measured(c.id)
            meas.parity += [p for p in (c.parity, c.emulated) if p is not None]
            meas.latency += [c.latency] if c.latency else []
        rewrite_manifest(package, m)
        return
    if target.is_file():
        log = read_verify_records(target, m.core_sha256)
    else:
        log = VerifyRecords(package=m.package.name, core_sha256=m.core_sha256)
    for c in checks:
        meas = log.measured(c.id)
        meas.parity += [p for p in (c.parity, c.emulated) if p is not None]
        meas.latency += [c.latency] if c.latency else []
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(log.to_json(), encoding="utf-8")
    os.replace(tmp, target)


# the records scripts/gpu_verify.py writes that carry what a verdict needs (v3: the task
# score and the host in HostInfo's shape)
GPU_RECORD_SCHEMAS = ("compile-pkg.gpu-verification.v3",)


def import_gpu_records(
    package: Path,
    paths: list[Path],
    *,
    records: Path | None = None,
    update: bool = False,
) -> VerifyReport:
    """Record `scripts/gpu_verify.py` runs (taken on a GPU host that has neither TVM's
    compiler nor pydantic) as this package's verify records, judged against the package's
    verdicts as `verify_package` judges its own measurements: serving on such a host then
    ranks by them (`load(..., use_verify_records=True)`), and a gpu artifact that failed
    there is not served. Each record must be of this build (`core_sha256`)."""
    m = read_manifest(package)
    target = None if update else (records or default_records_path(package))
    if target is not None:
        _writable(target)
    with VerifiedCopy(package, m.reference) as reference:
        judged = _judged_precisions(m, reference.artifact_dir / MODEL_FILE)
    checks: dict[str, ArtifactCheck] = {}
    hosts: list[MeasuredOn] = []
    if not paths:
        raise ConfigError("no gpu verification record given")
    for path in paths:
        doc = _gpu_record(path, m.core_sha256)
        try:
            host = MeasuredOn.model_validate(_known_flags(_host_of(doc)))
        except (ValidationError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{path}: its host is unreadable ({short_message(exc, 300)})"
            ) from None
        hosts.append(host)
        for row in doc.get("artifacts", []):
            try:
                a = m.artifact(row["id"])
                measured = _gpu_output(row, host, doc)
            except PackageError as exc:
                raise PackageError(f"{path}: {exc}") from None
            except (KeyError, TypeError, ValueError, ValidationError) as exc:
                where = row.get("id", "?") if isinstance(row, dict) else "?"
                raise ConfigError(
                    f"{path}: artifact {where}: an unreadable record ({short_message(exc, 300)}); "
                    "write it again with this version's scripts/gpu_verify.py"
                ) from None
            out = _as_the_build_rules(m, a, measured, judged)
            recorded = _recorded_parity(m, a.id, out.parity.mode)
            verdict, why = judge_parity(recorded, out.parity)
            checks[a.id] = ArtifactCheck(
                id=a.id,
                verdict=verdict,
                why=why,
                recorded_parity=recorded,
                parity=out.parity,
                latency=out.latency,
            )
    _record(package, m, list(checks.values()), target)
    bad = [c.id for c in checks.values() if c.bad]
    return VerifyReport(
        package=str(package),
        core_sha256=m.core_sha256,
        host=hosts[-1],
        records=str(target) if target is not None else "manifest",
        ok=not bad,
        regressions=bad,
        artifacts=list(checks.values()),
    )


def _gpu_record(path: Path, core_sha256: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable gpu verification record ({exc})") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema not in GPU_RECORD_SCHEMAS:
        raise ConfigError(
            f"{path}: a record of schema {schema!r}; this compile-pkg imports "
            f"{', '.join(GPU_RECORD_SCHEMAS)}: run this version's scripts/gpu_verify.py again"
        )
    theirs = str(doc.get("package", {}).get("core_sha256", ""))
    if theirs != core_sha256:
        raise PackageError(
            f"{path}: this record is of another build of the package (core {theirs[:12]}…, the "
            f"package's is {core_sha256[:12]}…); verify this build on the GPU host"
        )
    return doc


def _host_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The record's host in HostInfo's shape; the first v3 records (2026-12-04) name less of it
    (no ISA flags or OS), which the GPU artifacts' matching does not read."""
    if "measured_on" in doc:
        return dict(doc["measured_on"])
    host, gpu = doc.get("host", {}), doc.get("gpu", {})
    memory = str(gpu.get("memory_mib", "0")).split(".")[0]
    return {
        "arch": host.get("machine", ""),
        "cpu_model": host.get("cpu", {}).get("model", ""),
        "cpu_count": int(host.get("cpu", {}).get("cores", 1)),
        "isa": [],
        "os": "",
        "hostname": host.get("hostname", ""),
        "gpus": [
            {
                "name": gpu["name"],
                "compute_capability": gpu.get("compute_capability", ""),
                "driver": gpu.get("driver", ""),
                "memory_mib": int(memory) if memory.isdigit() else 0,
            }
        ]
        if gpu.get("name")
        else [],
        "runtimes": {"tvm": str(doc.get("runtime", {}).get("tvm", ""))},
        "measured_at": str(doc.get("measured_at", "")),
    }


def _known_flags(host: dict[str, Any]) -> dict[str, Any]:
    """The host as HostInfo keeps it: the ISA flags that decide (the script records all)."""
    return {**host, "isa": sorted(set(host.get("isa", [])) & INTERESTING_FLAGS)}


def _gpu_output(row: dict[str, Any], host: MeasuredOn, doc: dict[str, Any]) -> VerifyOutput:
    """One artifact's row of a gpu verification record as the build's records hold it."""
    status: ParityStatus = "passed" if row["status"] == "passed" else "failed"
    if row["status"] not in ("passed", "failed"):
        status = "error"  # it could not run there: no verdict on the artifact
    what = f"scripts/gpu_verify.py on {host.describe()}"
    samples = row.get("samples", {})
    judged = len(samples.get("judged", [])) if samples else 0
    if judged and judged < samples.get("of", judged):
        what += f"; judged on the {judged} of {samples['of']} samples of its static shape"
    parity = ParityRecord(
        status=status,
        precision=row.get("precision", ""),
        samples=judged,
        mode="native",
        note=what,
        reason=row.get("reason", "") if status != "passed" else "",
        basis=row.get("basis", ""),
        reference="reference/outputs.npz",
        host=host,
        outputs=row.get("parity", {}),
        runtime_details=row.get("runner", {}),
        task=row.get("task"),
    )
    return VerifyOutput(parity=parity, latency=_gpu_latency(row, host, doc))


def _stats(doc: dict[str, Any]) -> LatencyStats:
    return LatencyStats(**{**doc, "samples_ms": tuple(doc.get("samples_ms", ()))})


def _gpu_latency(
    row: dict[str, Any], host: MeasuredOn, doc: dict[str, Any]
) -> LatencyRecord | None:
    timing, against = row.get("latency"), row.get("against_reference", {})
    if not timing or "speedup" not in against:
        return None
    speedup = SpeedupInterval(
        **{**against["speedup"], "ratios": tuple(against["speedup"]["ratios"])}
    )
    return LatencyRecord(
        host=host,
        batch=int(timing["batch"]),
        input_shapes=timing["input_shapes"],
        source="verify",
        runner=row.get("runner", {}),
        reference_runner={"runtime": str(against.get("runtime", ""))},
        artifact=_stats(against["artifact"]),
        reference=_stats(against["reference"]),
        speedup=speedup,
        speedup_vs_reference=speedup.estimate,
        stopped=against.get("stopped", ""),
        method=f"scripts/gpu_verify.py: {against.get('what', '')}",
    )
