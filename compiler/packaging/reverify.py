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

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from pydantic import BaseModel, ConfigDict, ValidationError

from compiler.core.errors import ConfigError, IntegrityError, PackageError
from compiler.core.feeds import read_feeds_npz, read_labels
from compiler.core.host import HostInfo, probe_host
from compiler.core.latency import SpeedupInterval
from compiler.core.records import LatencyRecord, MeasuredOn, ParityRecord
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
    "ArtifactCheck",
    "VerifyReport",
    "VerifyVerdict",
    "judge_latency",
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
        )
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
    out = unverified_on_few_rows(out, lossy)
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
