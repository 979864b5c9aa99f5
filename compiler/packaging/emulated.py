"""Parity of a package's arm artifacts under aarch64 emulation: what `compile-pkg verify
--emulate aarch64` and the build's `verify: {emulate_arm: true}` switch call.

Runs every built aarch64 artifact in one emulated Python (compiler/measure/emulation.py) and
judges its outputs against the package's reference outputs with the package's recorded
tolerances. The records have mode "emulated" and name the emulated CPU, qemu and the aarch64
runtime version; nothing is timed.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import IntegrityError, PackageError
from compiler.core.feeds import read_feeds_npz, read_labels
from compiler.core.parity import IndexScores, read_scores
from compiler.core.records import EmulationInfo, MeasuredOn, ParityRecord
from compiler.measure.emulation import (
    ArtifactJob,
    EmulatedResult,
    EmulationEnv,
    locate_environment,
    run_emulated,
)
from compiler.measure.verify import judge_outputs, now_utc
from compiler.packaging.write import rewrite_manifest
from compiler.serving.integrity import VerifiedCopy
from compiler.serving.manifest import Manifest, read_manifest
from compiler.serving.signing import TrustPolicy, check_signatures, native_refusal

__all__ = ["EmulatedRow", "verify_emulated"]


@dataclass(frozen=True)
class EmulatedRow:
    id: str
    parity: ParityRecord


def verify_emulated(
    package: Path,
    arch: str = "aarch64",
    *,
    cpu: str | None = None,
    threads: int = 0,
    env: EmulationEnv | None = None,
    write: bool = False,
    trust: TrustPolicy | None = None,
) -> list[EmulatedRow]:
    """Parity of every built `arch` artifact of `package`, run under emulation.

    Every file runs from a private copy hashed while copied (a tampered file is an `error`
    record), and native code (a TVM .so) only from a package signed by a key `trust` trusts.
    Returns one row per artifact, in manifest order. With `write`, the records are appended
    to the manifest's measurements.
    """
    m = read_manifest(package)
    chosen = [
        a
        for a in m.artifacts
        if a.status == "built" and a.requirements is not None and a.requirements.arch == arch
    ]
    if not chosen:
        have = sorted(a.id for a in m.artifacts)
        raise PackageError(f"{package}: no built {arch} artifact to verify (artifacts: {have})")
    env = env or locate_environment(arch)
    cpu = cpu or env.default_cpu
    policy = trust or TrustPolicy.from_env()
    signatures = check_signatures(package, m, policy)
    rows: list[EmulatedRow] = []
    jobs: list[ArtifactJob] = []
    precision: dict[str, str] = {}
    with ExitStack() as copies:
        reference = copies.enter_context(VerifiedCopy(package, m.reference)).artifact_dir
        inputs = read_feeds_npz(reference / "inputs.npz")
        refs = read_feeds_npz(reference / "outputs.npz")
        labels = read_labels(reference / "labels.json") if m.policy.parity.task else None
        scores = read_scores(reference)
        for a in chosen:
            refusal = native_refusal(a, signatures, policy)
            if refusal:
                record = ParityRecord(
                    status="not-verified", reason=refusal, mode="emulated", precision=a.precision
                )
                rows.append(EmulatedRow(a.id, record))
                continue
            try:
                copy = copies.enter_context(VerifiedCopy(package, a))
            except IntegrityError as exc:
                record = ParityRecord(
                    status="error", reason=str(exc), mode="emulated", precision=a.precision
                )
                rows.append(EmulatedRow(a.id, record))
                continue
            assert a.runtime is not None
            outputs = [t.name for t in m.contract.outputs]
            jobs.append(ArtifactJob(a.id, a.backend, copy.artifact_dir, a.runtime, outputs))
            precision[a.id] = a.precision
        results = run_emulated(env, jobs, inputs, cpu=cpu, threads=threads) if jobs else []
    for res in results:
        record = _record(precision[res.id], res, refs, labels, m, env, cpu, scores)
        rows.append(EmulatedRow(res.id, record))
    if write:
        for row in rows:
            m.measured(row.id).parity.append(row.parity)
        rewrite_manifest(package, m)
    order = {a.id: i for i, a in enumerate(chosen)}
    return sorted(rows, key=lambda r: order[r.id])


def _record(
    precision: str,
    res: EmulatedResult,
    refs: list[dict[str, np.ndarray]],
    labels: list[Any] | None,
    m: Manifest,
    env: EmulationEnv,
    cpu: str,
    scores: list[dict[str, IndexScores]] | None = None,
) -> ParityRecord:
    assert res.host is not None
    on = MeasuredOn(**res.host.model_dump(), measured_at=now_utc())
    version = res.runtime_version or env.runtimes.get(res.backend, "?")
    note = (
        f"ran the {env.arch} build of {res.backend} {version} under {env.describe(cpu)} "
        "user-mode emulation on an x86_64 host; parity only: nothing is timed under emulation"
    )
    emulation = EmulationInfo(
        qemu=env.qemu_build,
        cpu=cpu,
        runtime=f"{res.backend} {res.runtime_version}".strip(),
        python=env.python,
    )
    if not res.ok:
        return ParityRecord(
            status="error",
            reason=f"could not run under emulation ({res.stage}): {res.error}",
            precision=precision,
            host=on,
            mode="emulated",
            note=note,
            emulation=emulation,
        )
    assert res.outputs is not None
    # the same verdict as a native check: outputs by kind, and the task where labels ship
    judged = judge_outputs(
        res.outputs, refs, m.contract, precision, m.policy.parity, labels, scores
    )
    return judged.model_copy(
        update={
            "mode": "emulated",
            "note": note,
            "reference": m.reference.description,
            "host": on,
            "runtime_details": res.details,
            "emulation": emulation,
        }
    )
