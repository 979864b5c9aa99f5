"""Serving: load a package and pick the artifact that fits this host, with a fallback chain.

`load()` probes the host, ranks artifacts (compatible, parity passed, fastest measured on a
host like this one; see compiler/selection.py), then tries them in order: each candidate's
files are checked against their sha256 and its runtime is loaded; any failure is recorded
and the next candidate is tried. The session says what it picked and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.errors import IntegrityError, NoCompatibleArtifact
from compiler.core.host import HostInfo, probe_host
from compiler.pipeline.normalize import file_sha256
from compiler.serving.manifest import ArtifactEntry, Manifest, read_manifest
from compiler.serving.selection import rank

__all__ = ["Session", "load", "check_files"]

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


@dataclass
class Session:
    """A loaded artifact. `run(inputs)` validates inputs against the contract."""

    package: Path
    manifest: Manifest
    artifact: str
    reason: str
    host: HostInfo
    decisions: list[tuple[str, str]] = field(default_factory=list)  # (artifact, verdict)
    _runner: Any = None

    @property
    def contract(self):  # type: ignore[no-untyped-def]
        return self.manifest.contract

    def run(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return self._runner.run(inputs)

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
        lines += [f"  {aid}: {verdict}" for aid, verdict in self.decisions]
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
    from targets.registry import get_backend

    package = Path(package_path)
    manifest = read_manifest(package)
    host = host or probe_host()
    candidates, excluded = rank(manifest, host, order=order, allow_unverified=allow_unverified)
    decisions = [(c.id, f"excluded: {c.reason}") for c in excluded]
    pending = None  # a TensorRT runner whose engine builds in the background (deferred artifact)
    for c in candidates:
        a = manifest.artifact(c.id)
        runner = None
        try:
            check_files(package, a)
            runner = get_backend(a.backend).runner(
                package / a.directory,
                a.runtime,
                manifest.contract,
                threads=threads,
                cache_dir=Path(cache_dir) if cache_dir else None,
            )
            runner.load()
        except Exception as exc:  # any failure to load: record it and fall back
            if pending is None and getattr(runner, "build_job", None) is not None:
                pending = runner
            verdict = f"failed to load: {' '.join(str(exc).split())[:300]}"
            log.warning("%s %s; trying the next artifact", c.id, verdict)
            decisions.append((c.id, verdict))
            continue
        if pending is not None:  # serve this one until the engine is ready, then switch
            from targets.tensorrt import SwitchingRunner

            runner = SwitchingRunner(runner, pending)
        decisions.append((c.id, f"picked: {c.reason}"))
        tried = [d for d in decisions if d[1].startswith("failed")]
        why = c.reason + (f" (after {len(tried)} fallback(s))" if tried else "")
        log.info("picked %s: %s", c.id, why)
        return Session(package, manifest, c.id, why, host, decisions, runner)
    lines = "\n".join(f"  {aid}: {v}" for aid, v in decisions) or "  (no artifacts)"
    raise NoCompatibleArtifact(
        f"{package}: no artifact can be loaded on this host ({host.describe()}):\n{lines}"
    )
