"""A loaded package: the artifact serving picked, why, and how to run it.

`Session.run(inputs)` validates the inputs against the contract the package enforces (dims
ranged only where the config set a range or the model fixes the size) and runs the artifact.
`describe()` is a JSON-able summary for logs and metrics; after `close()` every call that
needs the artifact raises a clear error. The private folders the session loaded from (the
verified copies, an unpacked archive) are removed at close, or when the session is collected.
"""

from __future__ import annotations

import shutil
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import CompilePkgError
from compiler.core.host import HostInfo
from compiler.serving.integrity import VerifiedCopy
from compiler.serving.manifest import Manifest
from compiler.serving.selection import REFERENCE
from targets.runner import Runner, SwitchingRunner

__all__ = ["Decision", "Session"]


@dataclass(frozen=True)
class Decision:
    """What the loader did with one artifact, and why."""

    artifact: str
    outcome: Literal["excluded", "failed", "picked"]
    reason: str

    def __str__(self) -> str:
        verb = {"excluded": "excluded", "failed": "failed to load", "picked": "picked"}
        return f"{verb[self.outcome]}: {self.reason}"


def _cleanup(copies: Sequence[VerifiedCopy], unpacked: Path | None) -> None:
    for c in copies:
        c.close()
    if unpacked is not None:
        shutil.rmtree(unpacked, ignore_errors=True)


@dataclass(eq=False)
class Session:
    """A loaded artifact of a package. `run(inputs)` validates inputs against `contract`."""

    package: Path
    manifest: Manifest
    artifact: str
    reason: str
    host: HostInfo
    decisions: list[Decision]
    contract: Contract  # what run() checks inputs against
    signatures: str  # who signed the package's core, as the trust policy sees it
    integrity_failures: list[str]  # only with integrity="fallback": what was skipped
    runner: Runner | SwitchingRunner | None
    copies: list[VerifiedCopy] = field(default_factory=list)
    unpacked: Path | None = None  # the private folder a packed package was extracted into

    def __post_init__(self) -> None:
        self._finalizer = weakref.finalize(self, _cleanup, list(self.copies), self.unpacked)

    @property
    def closed(self) -> bool:
        return self.runner is None

    def _live(self) -> Runner | SwitchingRunner:
        if self.runner is None:
            raise CompilePkgError(
                f"{self.package}: this session ({self.artifact}) was closed; call load() again"
            )
        return self.runner

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return self._live().run(inputs)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        self._finalizer.detach()
        _cleanup(self.copies, self.unpacked)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def explain(self) -> str:
        lines = [f"picked {self.artifact}: {self.reason}", f"host: {self.host.describe()}"]
        lines.append(f"signatures: {self.signatures}")
        lines += [f"integrity (fallback): {f}" for f in self.integrity_failures]
        lines += [f"  {d.artifact}: {d}" for d in self.decisions]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (json.dumps it) of what serves, where, and why."""
        if self.artifact == REFERENCE:  # the package's own fp32 model (selection.py)
            target, backend, precision = "", "onnxruntime", "fp32"
        else:
            a = self.manifest.artifact(self.artifact)
            target, backend, precision = a.target, a.backend, a.precision
        return {
            "package": self.manifest.package.name,
            "version": self.manifest.package.version,
            "path": str(self.package),
            "core_sha256": self.manifest.core_sha256,
            "artifact": self.artifact,
            "target": target,
            "backend": backend,
            "precision": precision,
            "reason": self.reason,
            "host": self.host.describe(),
            "signatures": self.signatures,
            "integrity_failures": list(self.integrity_failures),
            "decisions": [
                {"artifact": d.artifact, "outcome": d.outcome, "reason": d.reason}
                for d in self.decisions
            ],
            "contract": self.contract.model_dump(mode="json"),
            "runner": dict(self.runner.describe()) if self.runner is not None else {},
            "closed": self.closed,
        }
