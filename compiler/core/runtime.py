"""What a backend's runtime module gives back: a loaded artifact that runs feeds.

Every backend has one runtime module (`targets/<backend>/runtime.py`, standard library, numpy
and that runtime only) with

    load(artifact_dir, settings, outputs, *, threads=None, cache_dir=None) -> LoadedArtifact

The runner used by serving and measurement, the emulated aarch64 worker and the GPU
verification script all call it; none of them knows how a runtime loads an artifact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

__all__ = ["LoadedArtifact", "RunnerInfo"]

# Threads, device and precision actually in use: for latency records and logs.
RunnerInfo = dict[str, str | int | float | bool]


class LoadedArtifact(Protocol):
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for one feed; feeds were already checked against the contract."""
        ...

    def describe(self) -> RunnerInfo: ...

    def sync(self) -> None:
        """Wait for work under way: queued device work (GPU runtimes), a compile for an input
        shape (OpenVINO's static shapes); a no-op where there is none."""
        ...

    def close(self) -> None: ...
