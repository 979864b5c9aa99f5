"""The `--strict` gate a release pipeline relies on: every requested artifact built and passed.

An artifact is `passed` (built, latest decisive parity record passed), `unavailable` (skipped
for a missing backend library or hardware, deferred to the serving host, or not verified
because this host cannot run it: accepted only with `--allow-unavailable`) or `failed`
(failed to build, parity failed or errored, skipped for any other reason, or not verified
although this host could run it).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from compiler.core.host import HostInfo
from compiler.core.records import ParityRecord
from compiler.serving.manifest import ArtifactEntry, Manifest

__all__ = ["GateOutcome", "GateVerdict", "gate_artifacts", "strict_failures"]

GateOutcome = Literal["passed", "unavailable", "failed"]


class GateVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    artifact: str
    outcome: GateOutcome
    reason: str = ""


def _parity_failures(record: ParityRecord) -> str:
    why = [f"{name}: {f}" for name, o in record.outputs.items() for f in o.failures]
    why += [f"{name}: {o.error}" for name, o in record.outputs.items() if o.error]
    return "; ".join(why) or record.reason or "see reports/parity.json"


def _verdict(m: Manifest, a: ArtifactEntry, host: HostInfo) -> GateVerdict:
    def verdict(outcome: GateOutcome, reason: str = "") -> GateVerdict:
        return GateVerdict(artifact=a.id, outcome=outcome, reason=reason)

    if a.status == "failed":
        return verdict("failed", f"build failed: {a.reason}")
    if a.status == "skipped":
        # a skip carries an install hint only when a backend library or hardware is missing
        return verdict("unavailable" if a.install else "failed", f"skipped: {a.reason}")
    if a.status == "deferred":
        return verdict("unavailable", "deferred: built on the serving host")
    records = m.measured(a.id).parity
    decisive = [r for r in records if r.decisive]
    if decisive:
        last = decisive[-1]
        if last.status == "passed":
            return verdict("passed", f"parity passed ({last.mode})")
        return verdict("failed", f"parity failed ({last.mode}): {_parity_failures(last)}")
    last_record = records[-1] if records else None
    if last_record is not None and last_record.status == "error":
        return verdict("failed", f"parity could not be checked: {last_record.reason}")
    why = last_record.reason if last_record else "no parity record"
    cannot = a.requirements.mismatches(host) if a.requirements else []
    if cannot:
        return verdict("unavailable", f"not verified: {why}")
    return verdict("failed", f"not verified although this host can run it: {why}")


def gate_artifacts(m: Manifest, host: HostInfo) -> list[GateVerdict]:
    """Each artifact's outcome, judged on `host` (the host that built and checked it)."""
    return [_verdict(m, a, host) for a in m.artifacts]


def strict_failures(verdicts: list[GateVerdict], allow_unavailable: bool) -> list[GateVerdict]:
    """What makes `--strict` fail: `failed`, and `unavailable` unless the user accepted it."""
    return [
        v
        for v in verdicts
        if v.outcome == "failed" or (v.outcome == "unavailable" and not allow_unavailable)
    ]
