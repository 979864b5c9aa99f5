"""perf/olive_task.py: the task metric as Olive's custom metric runs it (no Olive needed: it
hands the script a model handler, of which the script reads `model_path`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.core.feeds import write_npz
from perf.olive_task import evaluate


def top_is_label(outputs: list[dict[str, np.ndarray]], labels: list[int]) -> float:
    """The fraction of samples whose argmax is their label (the metric under test)."""
    return float(
        np.mean([int(np.argmax(o["y"])) == lab for o, lab in zip(outputs, labels, strict=True)])
    )


def test_scores_every_sample_with_its_label_by_file_name(tmp_path: Path) -> None:
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Neg", ["x"], ["y"])],
            "neg",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path / "neg.onnx"
    onnx.save(model, path)
    samples = tmp_path / "samples"
    samples.mkdir()
    # Neg puts the argmax on the smallest input: 2, 0, 1; the labels are keyed by file and
    # written out of order, so a list read in the file's order would misalign them
    rows = {"0002.npz": [3.0, 2.0, 1.0], "0000.npz": [0.0, 5.0, 5.0], "0001.npz": [4.0, 0.0, 9.0]}
    for name, row in rows.items():
        write_npz(samples / name, {"x": np.array([row], dtype=np.float32)})
    labels = {"0002.npz": 2, "0000.npz": 0, "0001.npz": 2}  # the last one wrong
    (samples / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    handler = SimpleNamespace(model_path=str(path))
    metric = f"{__name__}:top_is_label"
    assert evaluate(handler, None, None, metric=metric, samples=str(samples)) == 2 / 3
    labels["0001.npz"] = 1
    (samples / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
    assert evaluate(handler, None, None, metric=metric, samples=str(samples)) == 1.0
