"""Run in-memory ONNX models on ONNX Runtime CPU, quietly, for passes that measure.

Quantization and fp16 passes check their own output (accuracy-aware loop, "ORT can load
it"); they share this one way of doing it: one thread, so results do not depend on the
build host's core count, and library log chatter kept out of build output.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx

__all__ = ["quiet", "run_model", "session"]


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Raise the named loggers (root when none) to ERROR and swallow stdout for the duration:
    ONNX Runtime's calibrators and fusion scripts print progress there."""
    loggers = [logging.getLogger(n) for n in (names or ("",))]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.setLevel(level)


def session(model: onnx.ModelProto, optimization: str = "all") -> Any:
    """An ONNX Runtime CPU session on one thread for a model held in memory."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_model(
    model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Outputs of `model` for each feed, by output name."""
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, feed), strict=True)) for feed in feeds]
