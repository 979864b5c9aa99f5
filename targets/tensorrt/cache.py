"""The engine cache on a serving (or build) host: engines built from a deferred spec, and
TensorRT timing caches reused across builds on the same GPU and TensorRT version.

Layout under `<cache_dir>/tensorrt/`: `engines/<key>/{engine.plan,compatibility.json}` and
`timing/<gpu>-trt<version>.cache`. Entries are written to a temporary name and renamed, so a
reader never sees half an engine; two processes building the same key both succeed and the
last rename wins.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.core.host import GpuInfo

__all__ = ["ADAPTER_VERSION", "CachedEngine", "EngineCache", "engine_cache_key", "file_digest"]

ADAPTER_VERSION = "1"  # bump when the way engines are built changes


def engine_cache_key(
    model_digest: str, gpu: GpuInfo, trt_version: str, settings_digest: str = ""
) -> str:
    """Key of an engine: the ONNX's sha256, GPU model and compute capability, TensorRT version
    and the builder settings' digest. Readable prefix, hashed body."""
    body = json.dumps(
        {
            "adapter": ADAPTER_VERSION,
            "model": model_digest,
            "gpu": gpu.name,
            "cc": gpu.compute_capability,
            "tensorrt": trt_version,
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


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EngineCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "tensorrt"

    def entry(self, key: str) -> Path:
        return self.root / "engines" / key

    def lookup(self, key: str) -> CachedEngine | None:
        d = self.entry(key)
        engine, record = d / "engine.plan", d / "compatibility.json"
        if not (engine.is_file() and record.is_file()):
            return None
        try:
            return CachedEngine(engine, json.loads(record.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def store(self, key: str, plan: bytes, record: dict[str, Any]) -> CachedEngine:
        """Write the engine first and its record last: the record marks the entry complete."""
        d = self.entry(key)
        _atomic_write(d / "engine.plan", plan)
        _atomic_write(
            d / "compatibility.json", json.dumps(record, sort_keys=True, indent=1).encode()
        )
        return CachedEngine(d / "engine.plan", record)

    def timing_cache_path(self, gpu: GpuInfo, trt_version: str) -> Path:
        name = f"{_slug(gpu.name)}-sm{_slug(gpu.compute_capability)}-trt{_slug(trt_version)}.cache"
        return self.root / "timing" / name

    def load_timing_cache(self, gpu: GpuInfo, trt_version: str) -> bytes:
        p = self.timing_cache_path(gpu, trt_version)
        try:
            return p.read_bytes()
        except OSError:
            return b""

    def store_timing_cache(self, gpu: GpuInfo, trt_version: str, data: bytes) -> None:
        if data:
            _atomic_write(self.timing_cache_path(gpu, trt_version), data)
