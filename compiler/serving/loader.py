"""Serving: load a package and pick the artifact that fits this host, with a fallback chain.

`load()` probes the host, ranks artifacts (compatible, parity passed, fastest measured on a
host like this one; see compiler/serving/selection.py), then tries them in order: each
candidate's files are checked against their sha256 and its runtime is loaded; any failure is
recorded and the next candidate is tried. The session says what it picked and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compiler.core.contract import Contract
from compiler.core.errors import IntegrityError, NoCompatibleArtifact, short_message
from compiler.core.hashing import file_sha256
from compiler.core.host import HostInfo, probe_host
from compiler.serving.manifest import ArtifactEntry, Manifest, read_manifest
from compiler.serving.selection import rank
from targets.runner import SwitchingRunner, open_runner

__all__ = ["Decision", "Session", "check_files", "load"]

log = logging.getLogger("compile_pkg.loader")


def check_files(package: Path, artifact: ArtifactEntry) -> None:
    """Raise IntegrityError when a file is missing or differs from the manifest."""
    if not artifact.files:
        raise IntegrityError(f"{artifact.id}: the manifest lists no files")
    for f in artifact.files:
        path = package / f.path
        if not path.is_file():
            raise IntegrityError(f"{artifact.id}: file {f.path} is missing from {package}")
        if path.stat().st_size != f.size or file_sha256(path) != f.sha256:
            raise IntegrityError(
                f"{artifact.id}: file {f.path} does not match its sha256 in the manifest "
                f"(tampered or corrupted); rebuild or re-download the package"
            )


@dataclass(frozen=True)
class Decision:
    """What the loader did with one artifact, and why."""

    artifact: str
    outcome: Literal["excluded", "failed", "picked"]
    reason: str

    def __str__(self) -> str:
        verb = {"excluded": "excluded", "failed": "failed to load", "picked": "picked"}
        return f"{verb[self.outcome]}: {self.reason}"


@dataclass
class Session:
    """A loaded artifact. `run(inputs)` validates inputs against the contract."""

    package: Path
    manifest: Manifest
    artifact: str
    reason: str
    host: HostInfo
    decisions: list[Decision] = field(default_factory=list)
    _runner: Any = None

    @property
    def contract(self) -> Contract:
        return self.manifest.contract

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return self._runner.run(inputs)  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def explain(self) -> str:
        lines = [f"picked {self.artifact}: {self.reason}", f"host: {self.host.describe()}"]
        lines += [f"  {d.artifact}: {d}" for d in self.decisions]
        return "\n".join(lines)


def load(
    package_path: str | Path,
    *,
    order: list[str] | None = None,
    allow_unverified: bool = False,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
    host: HostInfo | None = None,
) -> Session:
    """Load the best artifact of `package_path` for this host.

    order: artifact ids to try first, in this order (default: the package's configured
    order, then best measured latency). allow_unverified: also try artifacts whose parity
    was not verified (never ones that failed). cache_dir: where runtimes may keep compiled
    caches (OpenVINO CACHE_DIR, TensorRT engines).
    """
    package = Path(package_path)
    manifest = read_manifest(package)
    host = host or probe_host()
    candidates, excluded = rank(manifest, host, order=order, allow_unverified=allow_unverified)
    decisions = [Decision(c.id, "excluded", c.reason) for c in excluded]
    pending = None  # a runner whose TensorRT engine builds in the background (deferred)
    for c in candidates:
        a = manifest.artifact(c.id)
        runner = None
        try:
            check_files(package, a)
            assert a.runtime is not None
            runner = open_runner(
                a.backend,
                package / a.directory,
                a.runtime,
                manifest.contract,
                threads=threads,
                cache_dir=Path(cache_dir) if cache_dir else None,
            )
            runner.load()
        except Exception as exc:  # any failure to load: record it and fall back
            if pending is None and runner is not None and runner.build_job is not None:
                pending = runner
            reason = short_message(exc, 300)
            log.warning("%s failed to load: %s; trying the next artifact", c.id, reason)
            decisions.append(Decision(c.id, "failed", reason))
            continue
        serving: Any = runner
        if pending is not None:  # serve this one until the engine is ready, then switch
            serving = SwitchingRunner(runner, pending)
        decisions.append(Decision(c.id, "picked", c.reason))
        tried = sum(d.outcome == "failed" for d in decisions)
        why = c.reason + (f" (after {tried} fallback(s))" if tried else "")
        log.info("picked %s: %s", c.id, why)
        return Session(package, manifest, c.id, why, host, decisions, serving)
    lines = "\n".join(f"  {d.artifact}: {d}" for d in decisions) or "  (no artifacts)"
    raise NoCompatibleArtifact(
        f"{package}: no artifact can be loaded on this host ({host.describe()}):\n{lines}"
    )
