"""The benchmark models (perf/models.py) are valid ONNX that ONNX Runtime runs on the inputs
perf/datasets.py makes for them; the FLOP counter counts what the graph does. No timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from perf.datasets import load_data, magika_features
from perf.flops import count_flops
from perf.models import MODELS, SHARED_MODELS, model_path

SIZES = {"samples": 2, "calibration": 2, "task": 4}
SYNTHETIC = [n for n, m in MODELS.items() if m.kind == "synthetic"]
REAL = [n for n, m in MODELS.items() if m.kind == "real"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("perf-models")


def _run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed), strict=True))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_builder_makes_a_valid_model_ort_runs(name: str, built: Path) -> None:
    path = model_path(MODELS[name], built)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert "random weights" in model.producer_name
    data = load_data(MODELS[name], SIZES)
    assert len(data.samples) == 2 and len(data.calibration) == 2 and data.task is None
    inputs = {i.name for i in model.graph.input} - {i.name for i in model.graph.initializer}
    assert set(data.samples[0]) == inputs
    outs = _run(path, data.samples[0])
    for arr in outs.values():
        assert np.isfinite(arr).all()
    probs = outs["probs"]
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-4)


def test_builders_are_deterministic(tmp_path: Path) -> None:
    from perf.models import mlp

    a, b = mlp(tmp_path / "a.onnx"), mlp(tmp_path / "b.onnx")
    assert a.read_bytes() == b.read_bytes()
    assert mlp(tmp_path / "c.onnx", seed=1).read_bytes() != a.read_bytes()


@pytest.mark.parametrize("name", REAL)
def test_real_model_data_fits_the_model_and_scores(name: str) -> None:
    if not (SHARED_MODELS / MODELS[name].source).is_file():
        pytest.skip(f"{SHARED_MODELS} not found: the shared models folder sits beside the checkout")
    path = model_path(MODELS[name], Path("unused"))
    data = load_data(MODELS[name], SIZES)
    assert data.task is not None and len(data.task.feeds) == len(data.task.expected) > 0
    outs = [_run(path, f) for f in data.task.feeds]
    score = data.task.score(outs)
    assert 0.0 <= score["value"] <= 1.0
    assert score["value"] >= 0.5, f"the fp32 model should mostly get its own task right: {score}"


def test_magika_features_strip_and_pad() -> None:
    row = magika_features(b"\n\tabc\n ", beg=6, end=6, block=16, pad=256)
    assert row.dtype == np.int32 and row.shape == (1, 12)
    # head: left-stripped, padded after; tail: right-stripped, padded before
    assert row[0].tolist() == [97, 98, 99, 10, 32, 256, 256, 10, 9, 97, 98, 99]


def test_flops_of_the_mlp_are_its_matmuls(tmp_path: Path) -> None:
    path = model_path(MODELS["mlp"], tmp_path)
    feed = {"x": np.zeros((32, 256), np.float32)}
    count = count_flops(path, feed)
    assert count.total == 2 * 32 * (256 * 1024 + 1024 * 1024 + 1024 * 10)
    assert count.by_op == {"MatMul": count.total} and not count.skipped


def test_flops_of_a_grouped_strided_conv(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.zeros((8, 2, 3, 3), np.float32), "w")  # 8 out, groups=2
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], group=2)
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    count = count_flops(path, {"x": np.zeros((2, 4, 16, 16), np.float32)})
    assert count.total == 2 * (2 * 8 * 8 * 8) * (2 * 3 * 3)  # 2 * out elements * Cin/g * k*k


@pytest.mark.parametrize(("op", "gates", "layout"), [("LSTM", 4, 0), ("GRU", 3, 1)])
def test_flops_of_a_bidirectional_recurrent_cell(
    tmp_path: Path, op: str, gates: int, layout: int
) -> None:
    hidden, features, steps, batch = 16, 12, 7, 3
    w = numpy_helper.from_array(np.zeros((2, gates * hidden, features), np.float32), "w")
    r = numpy_helper.from_array(np.zeros((2, gates * hidden, hidden), np.float32), "r")
    node = helper.make_node(
        op, ["x", "w", "r"], ["y"], hidden_size=hidden, direction="bidirectional", layout=layout
    )
    x_dims = ["n", "t", features] if layout else ["t", "n", features]
    graph = helper.make_graph(
        [node],
        "rnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, r],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "rnn.onnx"
    onnx.save(model, str(path))
    x = np.zeros((batch, steps, features) if layout else (steps, batch, features), np.float32)
    count = count_flops(path, {"x": x})
    # every step, both directions: the input times W and the hidden state times R, per gate
    want = 2 * steps * batch * 2 * gates * hidden * (features + hidden)
    assert count.total == want and count.by_op == {op: want} and not count.skipped
