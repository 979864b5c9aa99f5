"""The engine cache on a serving (or build) host: engines built from a deferred spec, and
TensorRT timing caches reused across builds on the same GPU and TensorRT version.

Layout under `<cache_dir>/tensorrt/`: `engines/<key>/{engine.plan,engine.sha256,
compatibility.json}`, `timing/<gpu>-trt<version>.cache` and `build.lock`. Entries are written
to a temporary name and renamed, so a reader never sees half an engine. An engine's bytes are
checked against its recorded sha256 before TensorRT deserializes them (`read_engine`): a
damaged entry is rebuilt, never loaded. `BuildLock` (an fcntl lock on `build.lock`) lets one
process per host build at a time; the others wait, then find the engine in the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from compiler.core.errors import IntegrityError
from compiler.core.files import write_atomically
from compiler.core.host import GpuInfo

__all__ = [
    "ADAPTER_VERSION",
    "BuildLock",
    "CachedEngine",
    "EngineCache",
    "engine_cache_key",
    "file_digest",
    "read_engine",
]

ADAPTER_VERSION = "2"  # bump when the way engines are built changes


def engine_cache_key(
    model_digest: str, gpu: GpuInfo, trt_version: str, settings_digest: str = "", cuda: str = ""
) -> str:
    """Key of an engine: the ONNX's sha256, GPU model and compute capability, TensorRT version
    and CUDA flavour (cu12/cu13), and the builder settings' digest. Readable prefix, hashed
    body."""
    body = json.dumps(
        {
            "adapter": ADAPTER_VERSION,
            "model": model_digest,
            "gpu": gpu.name,
            "cc": gpu.compute_capability,
            "tensorrt": trt_version,
            "cuda": cuda,
            "settings": settings_digest,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(body.encode()).hexdigest()[:24]
    return f"sm{_slug(gpu.compute_capability)}-trt{_slug(trt_version)}-{digest}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).replace(".", "") or "x"


def file_digest(paths: list[Path]) -> str:
    """sha256 over the files' names and contents, in the given order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CachedEngine:
    engine: Path
    record: dict[str, Any]
    sha256: str = ""  # of the engine's bytes, recorded when it was stored


def read_engine(path: Path, sha256: str) -> bytes:
    """The engine's bytes, after checking them against `sha256` (before TensorRT sees them)."""
    data = path.read_bytes()
    have = hashlib.sha256(data).hexdigest()
    if have != sha256:
        raise IntegrityError(
            f"{path}: engine sha256 {have[:16]}... is not the recorded {sha256[:16] or '(none)'}"
            "...; refusing to deserialize it (delete the cache entry to rebuild)"
        )
    return data


class BuildLock:
    """One engine build at a time on this host: an exclusive fcntl lock on `<root>/build.lock`,
    held across processes (and released by the kernel if the holder dies). `waited` is how
    long acquiring took, in seconds."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / "build.lock"
        self.waited = 0.0
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        start = time.monotonic()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self.waited, self._fd = time.monotonic() - start, fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class EngineCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "tensorrt"

    def entry(self, key: str) -> Path:
        return self.root / "engines" / key

    def build_lock(self) -> BuildLock:
        return BuildLock(self.root)

    def lookup(self, key: str) -> CachedEngine | None:
        """The complete entry for `key` (engine, digest and record), else None."""
        d = self.entry(key)
        engine, digest, record = d / "engine.plan", d / "engine.sha256", d / "compatibility.json"
        if not (engine.is_file() and digest.is_file() and record.is_file()):
            return None
        try:
            rec = json.loads(record.read_text(encoding="utf-8"))
            return CachedEngine(engine, rec, digest.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None

    def store(self, key: str, plan: bytes, record: dict[str, Any]) -> CachedEngine:
        """Write the engine, then its digest, and its record last: the record marks the entry
        complete."""
        d = self.entry(key)
        sha = hashlib.sha256(plan).hexdigest()
        write_atomically(d / "engine.plan", plan)
        write_atomically(d / "engine.sha256", sha.encode() + b"\n")
        write_atomically(
            d / "compatibility.json", json.dumps(record, sort_keys=True, indent=1).encode()
        )
        return CachedEngine(d / "engine.plan", record, sha)

    def timing_cache_path(self, gpu: GpuInfo, trt_version: str) -> Path:
        name = f"{_slug(gpu.name)}-sm{_slug(gpu.compute_capability)}-trt{_slug(trt_version)}.cache"
        return self.root / "timing" / name
