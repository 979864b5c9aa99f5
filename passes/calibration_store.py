"""Calibration ranges shared between the nodes of a build.

The default cpu pipeline quantizes one float model twice with ONNX Runtime: `ort-int8` and
`ort-int8-rr` differ only in `reduce_range`, which changes the weights' quantization, never the
activation ranges. Calibration (running every sample through a model that outputs every
tensor's range, or its histogram for entropy and percentile) is most of a quantize node's time
and all of its memory peak: 14 GB for a PicoDet detector at 800x608. So ranges are stored by
what decides them, in a folder the build's nodes share (`PassContext.shared`, in the build's
scratch space), and the second node, or a second calibration method's retry in the int8
search, reads them instead of calibrating again.

A calibration is computed under a lock on its digest, so two nodes that need the same ranges
at once calibrate once: the second waits for the first. ONNX Runtime writes its calibration
cache (`quantize_static(calibration_cache_path=...)`) into the node's own scratch; the store
gets a copy by rename, so a node killed mid-write leaves no partial file behind.

The accuracy loop's layer ranking is shared the same way (`shared_json`): it quantizes the
model once per candidate layer, 62 times on ppocr_det (15.6 s of a 57 s node). `ort-int8-rr`
ranks with 8-bit weights, as `ort-int8` does (passes/quantize.py), so both nodes rank alike
and, where both chose the same calibration method (both keep min/max or both move to
percentile, as on ppocr_det and layout_cdla), the second reads the first's ranking; each
still judges every step with its own quantizer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compiler.core.files import locked, write_atomically
from compiler.core.hashing import file_sha256

__all__ = ["calibration_digest", "shared_calibration", "shared_json"]


def calibration_digest(
    model_file: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    settings: Mapping[str, Any],
) -> str:
    """sha256 of what decides the ranges: the float model's bytes, the calibration feeds and
    the settings that reach the calibrator (method, symmetry, percentile, op types, the
    quantized types, the runtime's version)."""
    h = hashlib.sha256(file_sha256(model_file).encode())
    for feed in feeds:
        for name in sorted(feed):
            a = np.ascontiguousarray(feed[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
    h.update(repr(sorted((k, repr(v)) for k, v in settings.items())).encode())
    return h.hexdigest()


def shared_calibration(
    store: Path | None, digest: str, cache: Path, calibrate: Callable[[], None]
) -> bool:
    """Make `cache` (the node's own calibration cache file) hold the ranges for `digest`:
    copied from `store` when another node computed them, else computed by `calibrate()`
    (which must write `cache`) and published to `store`. Without a store, just calibrate.
    Whether the ranges came from the store."""
    if store is None or not store.is_dir():
        calibrate()
        return False
    stored = store / f"ort-calibration-{digest}.json"
    with locked(store / f"ort-calibration-{digest}.lock"):
        if stored.is_file():
            shutil.copyfile(stored, cache)
            return True
        calibrate()
        if cache.is_file():
            write_atomically(stored, cache.read_bytes())
    return False


def shared_json(store: Path | None, name: str, compute: Callable[[], Any]) -> Any:
    """`compute()` (a JSON-able value) once per build for `name` (a digest of everything that
    decides it): the first node to ask computes it under a lock and publishes it to `store`,
    the others wait and read it. Without a store, just compute."""
    if store is None or not store.is_dir():
        return compute()
    stored = store / f"{name}.json"
    with locked(store / f"{name}.lock"):
        if stored.is_file():
            return json.loads(stored.read_text(encoding="utf-8"))
        value = compute()
        write_atomically(stored, json.dumps(value).encode())
    return value
