"""Building a catalogue model the way a user would, and reading the verdicts its package
records: the report driver (scripts/realmodels_report.py) and the slow tier share this.

A build with the model's labelled data names the model's task metric with `max_drop` 0, so
verify fails any artifact that does the task worse than the reference on the parity samples,
and serving never picks it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compiler.core.records import ParityRecord
from compiler.core.task import TaskScore as RecordedTask
from compiler.serving.manifest import ArtifactEntry, Manifest
from scripts.realdata.paths import REPO
from scripts.realdata.task import RealModel

__all__ = [
    "LOSSY",
    "ArtifactVerdict",
    "build_command",
    "build_env",
    "describe_task",
    "int8_loop",
    "run_build",
    "speedup",
    "task_options",
    "verdicts",
]

LOSSY = ("int8", "fp16", "bf16")


def task_options(model: RealModel, max_drop: float = 0.0) -> list[str]:
    """compile-pkg options naming the model's task metric and the drop it allows."""
    return [
        "--set",
        f"parity.task.metric={model.metric}",
        "--set",
        f"parity.task.max_drop={max_drop}",
    ]


def build_command(
    model: RealModel,
    out: Path,
    targets: str,
    cache: Path,
    data: tuple[Path, Path] | None,
    extra: list[str],
) -> list[str]:
    """The default command; with `data` (calibration, sample folders), the task metric too."""
    cmd = [sys.executable, "-m", "compiler.cli", str(model.path), "--targets", targets]
    cmd += ["-o", str(out), "--cache-dir", str(cache)]
    if data is not None:
        cmd += ["--calibration-data", str(data[0]), "--sample-data", str(data[1])]
        cmd += task_options(model)
    return cmd + extra


def build_env() -> dict[str, str]:
    """This environment with the repo on PYTHONPATH, so compile-pkg imports the metric from
    any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_build(cmd: list[str], log: Path) -> subprocess.CompletedProcess[str]:
    """Run a build; its stdout and stderr go to `log` as well."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=build_env())
    log.write_text(done.stdout + done.stderr)
    return done


@dataclass(frozen=True)
class ArtifactVerdict:
    """One artifact of a package as the build left it: status, its latest parity verdict
    and task score on the parity samples."""

    id: str
    precision: str
    status: str
    parity: str
    task: RecordedTask | None

    @property
    def task_failed(self) -> bool:
        return self.task is not None and self.task.status == "failed"

    def describe(self) -> str:
        told = f"{self.status}/{self.parity}"
        return f"{told}, task {describe_task(self.task)}" if self.task else told


def _latest(manifest: Manifest, artifact_id: str) -> ParityRecord | None:
    records = manifest.measured(artifact_id).parity
    return records[-1] if records else None


def verdicts(manifest: Manifest) -> list[ArtifactVerdict]:
    out = []
    for a in manifest.artifacts:
        record = _latest(manifest, a.id)
        parity = record.status if record else "none"
        task = record.task if record else None
        out.append(ArtifactVerdict(a.id, a.precision, a.status, parity, task))
    return out


def describe_task(task: RecordedTask | None) -> str:
    """'0.923 (reference 0.962)', or why it was not scored."""
    if task is None:
        return "not scored"
    if task.artifact is None or task.reference is None:
        return f"{task.status}: {task.reason}"
    return f"{task.artifact:.3f} (reference {task.reference:.3f}, {task.samples} samples)"


def speedup(manifest: Manifest, artifact_id: str) -> str:
    """The build's same-run speedup of the artifact, with its interval where recorded."""
    for rec in reversed(manifest.measured(artifact_id).latency):
        if rec.source != "build":
            continue
        if rec.speedup is not None:
            return rec.speedup.describe() + (" (host busy)" if rec.busy else "")
        if rec.speedup_vs_reference is not None:
            return f"{rec.speedup_vs_reference:.2f}x (no interval recorded)"
        if rec.status != "measured":
            return f"not measured: {rec.status} {rec.reason}"[:120]
    return "not measured on this host"


def _pass_details(manifest: Manifest, a: ArtifactEntry, name: str) -> dict[str, object] | None:
    """The record of pass `name` on the artifact's chain (a target's own or a shared one)."""
    for key, record in manifest.build.pass_log.items():
        scope, _, rest = key.rpartition(":")
        if rest.split("#")[0] == name and scope in ("", a.target):
            return dict(record.details)
    return None


def _gate(gate: object) -> str:
    if not isinstance(gate, dict):
        return "?"
    task = gate.get("task")
    scored = (
        f", task {task.get('artifact')} vs {task.get('reference')}"
        if isinstance(task, dict) and task.get("artifact") is not None
        else ""
    )
    return ("passed" if gate.get("passed") else "failed") + scored


def _notes(loop: dict[str, object]) -> str:
    said = [str(loop[k]) for k in ("note", "not_run", "budget_spent") if loop.get(k)]
    return "".join(f"; {n}" for n in said)


def int8_loop(manifest: Manifest, artifact_id: str) -> str:
    """What the int8 pass's accuracy loop did for this artifact, in a line."""
    a = manifest.artifact(artifact_id)
    quantize = _pass_details(manifest, a, "quantize") if "quantize" in a.passes else None
    nncf = _pass_details(manifest, a, "nncf") if "nncf" in a.passes else None
    if quantize is not None:
        loop = quantize.get("accuracy_aware")
        if not isinstance(loop, dict):
            off = quantize.get("accuracy_aware_off")
            return f"quantize: {off}" if off else "quantize: accuracy_aware not enabled"
        kept = loop.get("kept_in_float") or []
        return (
            f"quantize accuracy_aware: gate before {_gate(loop.get('gate_before'))}; "
            f"kept {len(kept) if isinstance(kept, list) else kept} layers in float; "
            f"gate after {_gate(loop.get('gate_after'))}" + _notes(loop)
        )
    if nncf is not None:
        control = nncf.get("accuracy_control")
        if not isinstance(control, dict):
            off = nncf.get("accuracy_control_off")
            return f"nncf: accuracy_control off: {off}" if off else "nncf: accuracy_control off"
        return (
            f"nncf accuracy_control: gate before {_gate(control.get('gate_before'))}; "
            f"gate after {_gate(control.get('gate_after'))}" + _notes(control)
        )
    return "no int8 pass record"
