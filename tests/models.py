"""Tiny models built in code for tests (onnx.helper), and where the shared real models live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

__all__ = ["SHARED_MODELS", "shared_model", "tiny_cnn", "tiny_mlp", "save"]

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def shared_model(name: str) -> Path:
    """Path of a real model in ../shared/models, or skip the test with the reason."""
    path = SHARED_MODELS / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared models folder sits beside the checkout")
    return path


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def tiny_mlp(seed: int = 0, batch: str | int = "batch", opset: int = 17) -> onnx.ModelProto:
    """x[batch,8] -> MatMul+Add -> Relu -> MatMul+Add -> y[batch,4]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (16, 4)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="add1"),
        helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"], name="mm2"),
        helper.make_node("Add", ["h3", "b2"], ["y"], name="add2"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8 if opset >= 13 else 7
    return model


def tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """The bundled example's architecture: [batch,3,32,32] -> 10 class probabilities."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_example", Path(__file__).resolve().parents[1] / "scripts" / "make_example.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build(seed)
