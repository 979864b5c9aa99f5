"""The task metric as an Olive custom metric: the user script of perf/olive_peer.py's
`ort-int8-eval` workflow (Olive's equivalent of compile-pkg's verdict on the same labelled
samples).

Olive calls `evaluate(model, device, execution_providers, **evaluate_func_kwargs)` with the
model it evaluates (the input model, then the quantized one); here `metric` names the task
metric as compile-pkg's `--set parity.task.metric=` does (`module:function(outputs, labels)`)
and `samples` the labelled sample folder (`NNNN.npz` feeds and their `labels.json`, a label
per file name, as `scripts/make_data.py` writes it and `compile-pkg --sample-data` reads it). Every sample runs
through ONNX Runtime's CPU provider and the metric scores the outputs, as compile-pkg's task
hook scores them (compiler/core/task.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # Olive loads this file by path: the metrics live in scripts/
    sys.path.insert(0, str(ROOT))

__all__ = ["evaluate"]


def evaluate(
    model: Any, device: Any, execution_providers: Any, *, metric: str, samples: str
) -> float:
    """The task score of `model` (an Olive ONNX model handler) on the labelled samples."""
    import onnxruntime as ort

    from compiler.core.feeds import read_json, read_npz
    from compiler.core.task import load_callable

    del device, execution_providers  # the CPU provider, as compile-pkg's reference runs
    fn = load_callable(metric)  # as compile-pkg's task hook loads it
    folder = Path(samples)
    by_file = read_json(folder / "labels.json")
    if not isinstance(by_file, dict):
        raise ValueError(f"{folder}: no labels.json with a label per file name")
    files = sorted(folder.glob("*.npz"))
    labels = [by_file[f.name] for f in files]
    session = ort.InferenceSession(str(model.model_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outputs = [dict(zip(names, session.run(names, read_npz(f)), strict=True)) for f in files]
    return float(fn(outputs, labels))
