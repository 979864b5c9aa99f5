"""What OpenVINO's and TVM's ONNX frontends compute otherwise than ONNX defines it
(targets/frontend_gaps.py): each check finds the node in a model that shows the gap and not
in its twin that does not, and the library's own output shows the gap (the 'why': a test
here that starts to fail means the library was fixed and its check can go)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from targets.frontend_gaps import openvino_gaps, tvm_gaps
from tests.targets.builders import reference, save


def _model(node: onnx.NodeProto, inputs: dict[str, list[int]], outputs: list[str],
           inits: list[onnx.TensorProto], opset: int) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(
        [node],
        "gap",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _lstm(peephole: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(1, 20, 4)) * 0.3).astype(np.float32)
    r = (rng.normal(size=(1, 20, 5)) * 0.3).astype(np.float32)
    p = (rng.normal(size=(1, 15)) * 0.5 * peephole).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (p, "P"))]
    node = helper.make_node("LSTM", ["x", "W", "R", "", "", "", "", "P"], ["y"], hidden_size=5)
    return _model(node, {"x": [7, 2, 4]}, ["y"], inits, 14)


def _recurrent(op: str, **attrs: Any) -> onnx.ModelProto:
    """A 7-step LSTM, GRU or RNN of hidden size 5 over x[7, 2, 4], with a bias."""
    rng = np.random.default_rng(1)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    sides = 2 if attrs.get("direction") == "bidirectional" else 1
    w, r, b = ((rng.normal(size=s) * 0.5).astype(np.float32) for s in (
        (sides, gates * 5, 4), (sides, gates * 5, 5), (sides, 2 * gates * 5)))  # fmt: skip
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))]
    node = helper.make_node(op, ["x", "W", "R", "B"], ["y"], hidden_size=5, **attrs)
    return _model(node, {"x": [7, 2, 4]}, ["y"], inits, 14)


def _coupled_lstm(coupled: bool) -> onnx.ModelProto:
    return _recurrent("LSTM", input_forget=int(coupled))


def _two_way_rnn(differ: bool) -> onnx.ModelProto:
    return _recurrent(
        "RNN", direction="bidirectional", activations=["Relu", "Tanh" if differ else "Relu"]
    )


def _same_lower_pool(lower: bool) -> onnx.ModelProto:
    auto = "SAME_LOWER" if lower else "SAME_UPPER"
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=auto
    )
    return _model(node, {"x": [1, 3, 7, 8]}, ["y"], [], 13)


def _roi_align(mode: str) -> onnx.ModelProto:
    rois = np.array([[1, 2, 10, 12], [0, 0, 15, 15]], np.float32)
    inits = [
        numpy_helper.from_array(rois, "rois"),
        numpy_helper.from_array(np.zeros(2, np.int64), "bi"),
    ]
    node = helper.make_node(
        "RoiAlign", ["x", "rois", "bi"], ["y"], output_height=3, output_width=3,
        sampling_ratio=2, spatial_scale=0.5, coordinate_transformation_mode=mode,
    )  # fmt: skip
    return _model(node, {"x": [1, 3, 8, 8]}, ["y"], inits, 16)


def _maxpool(order: int) -> onnx.ModelProto:
    node = helper.make_node(
        "MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2], storage_order=order
    )
    model = _model(node, {"x": [1, 3, 8, 8]}, ["y"], [], 12)
    model.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, None))
    return model


def _conv_transpose(shaped: bool) -> onnx.ModelProto:
    w = np.random.default_rng(1).normal(size=(6, 2, 3, 3)).astype(np.float32)
    attrs = {"output_shape": [9, 10]} if shaped else {"output_padding": [0, 1]}
    node = helper.make_node(
        "ConvTranspose", ["x", "w"], ["y"], group=3, strides=[2, 2], kernel_shape=[3, 3], **attrs
    )
    return _model(node, {"x": [1, 6, 4, 4]}, ["y"], [numpy_helper.from_array(w, "w")], 11)


def _aspect_resize(policy: str) -> onnx.ModelProto:
    sizes = numpy_helper.from_array(np.array([8, 8], np.int64), "sizes")
    node = helper.make_node(
        "Resize", ["x", "", "", "sizes"], ["y"], axes=[2, 3], keep_aspect_ratio_policy=policy
    )
    return _model(node, {"x": [1, 2, 4, 6]}, ["y"], [sizes], 18)


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in model.graph.input
    }


def _openvino(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(feeds)
    return [np.asarray(got[o]) for o in compiled.outputs]


def _tvm(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    tvm = pytest.importorskip("tvm")
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(path), shape_dict={k: list(v.shape) for k, v in feeds.items()})
    mod = relax.transform.LegalizeOps()(relax.transform.DecomposeOpsForInference()(mod))
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return [vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()]).numpy()]


def _off(got: list[np.ndarray], want: dict[str, np.ndarray]) -> float:
    """The largest difference over the outputs (inf where a shape differs)."""
    return max(
        float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) if g.shape == w.shape
        else float("inf")
        for g, w in zip(got, want.values(), strict=False)
    )  # fmt: skip


def test_a_half_pixel_symmetric_resize_is_found_and_tvm_refuses_it(tmp_path: Path) -> None:
    """TVM's import stops at Resize's half_pixel_symmetric (opset 19): the backend refuses
    the model as not applicable before it converts it, instead of failing the build."""

    def resize(mode: str) -> onnx.ModelProto:
        scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
        node = helper.make_node(
            "Resize", ["x", "", "scales"], ["y"], mode="linear",
            coordinate_transformation_mode=mode,
        )  # fmt: skip
        return _model(node, {"x": [1, 2, 4, 6]}, ["y"], [scales], 19)

    shown, twin = resize("half_pixel_symmetric"), resize("half_pixel")
    assert any("half_pixel_symmetric" in why for why in tvm_gaps(shown)), tvm_gaps(shown)
    assert tvm_gaps(twin) == []
    feeds = _feeds(twin)
    path = save(twin, tmp_path / "twin")
    assert _off(_tvm(path, feeds), reference(path, [feeds])[0]) < 1e-5
    with pytest.raises(Exception, match="half_pixel_symmetric"):
        _tvm(save(shown, tmp_path / "shown"), feeds)


@pytest.mark.parametrize("detect", ["detect_positive", "detect_negative"])
def test_a_one_sided_isinf_is_found_and_tvm_shows_it(tmp_path: Path, detect: str) -> None:
    """TVM detects both infinities whatever IsInf's attributes say (a model that masks -inf
    padding and keeps +inf, or the other way round)."""
    feeds = {"x": np.array([np.inf, -np.inf, 1.0, np.nan], np.float32)}
    for value, gap in ((0, True), (1, False)):
        node = helper.make_node("IsInf", ["x"], ["y"], **{detect: value})
        model = _model(node, {"x": [4]}, [], [], 10)
        model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.BOOL, None))
        found = [why for why in tvm_gaps(model) if "IsInf" in why]
        assert bool(found) == gap, found
        path = save(model, tmp_path / f"{detect}{value}")
        off = _off(_tvm(path, feeds), reference(path, [feeds])[0])
        assert (off > 0) == gap, off


@pytest.mark.parametrize(("op", "gates"), [("LSTM", 4), ("GRU", 3), ("RNN", 1)])
def test_sequence_lens_on_a_dynamic_input_is_found_and_openvino_shows_it(
    tmp_path: Path, op: str, gates: int
) -> None:
    """Padded sequences of lengths 2, 4 and 5 of 5: OpenVINO stops each at its length where
    X's shape is static, and runs all to X's end where a dim of it is dynamic."""
    rng = np.random.default_rng(3)
    weights = [
        numpy_helper.from_array((rng.normal(size=shape) * 0.5).astype(np.float32), name)
        for name, shape in (("W", (1, gates * 6, 4)), ("R", (1, gates * 6, 6)))
    ]
    node = helper.make_node(op, ["x", "W", "R", "", "lens"], ["y", "y_h"], hidden_size=6)
    feeds = {
        "x": rng.uniform(size=(5, 3, 4)).astype(np.float32),
        "lens": np.array([2, 4, 5], np.int32),
    }
    for x_shape, gap in ((["T", 3, 4], True), ([5, 3, 4], False)):
        model = _model(node, {"x": x_shape}, ["y", "y_h"], weights, 14)
        model.graph.input.append(helper.make_tensor_value_info("lens", TensorProto.INT32, [3]))
        found = [why for why in openvino_gaps(model) if "sequence_lens" in why]
        assert bool(found) == gap, found
        path = save(model, tmp_path / f"{op}{gap}")
        off = _off(_openvino(path, feeds), reference(path, [feeds])[0])
        assert (off > 0.01) == gap, off


@pytest.mark.parametrize(
    ("backend", "make", "gap", "twin", "text"),
    [
        ("openvino", _lstm, True, False, "peephole weights of LSTM ['y']"),
        ("openvino", _coupled_lstm, True, False, "input_forget of LSTM ['y']"),
        ("openvino", _two_way_rnn, True, False, "activations to both directions of ['y']"),
        ("openvino", _maxpool, 1, 0, "indices of MaxPool ['y'] row-major"),
        ("openvino", _aspect_resize, "not_larger", "stretch", "keep_aspect_ratio_policy of Resize ['y']"),
        ("tvm", _roi_align, "half_pixel", "output_half_pixel", "RoiAlign ['y'] as output_half_pixel"),
        ("tvm", _conv_transpose, True, False, "output_shape of ConvTranspose ['y']"),
        ("tvm", _same_lower_pool, True, False, "pads MaxPool ['y'] (auto_pad SAME_LOWER"),
    ],
)  # fmt: skip
def test_the_gap_is_found_and_the_library_shows_it(
    tmp_path: Path,
    backend: str,
    make: Callable[[Any], onnx.ModelProto],
    gap: object,
    twin: object,
    text: str,
) -> None:
    gaps, run = (openvino_gaps, _openvino) if backend == "openvino" else (tvm_gaps, _tvm)
    shown = make(gap)
    assert any(text in why for why in gaps(shown)), gaps(shown)
    assert gaps(make(twin)) == []
    for model, differs in ((shown, True), (make(twin), False)):
        path = save(model, tmp_path / f"m{differs}")
        feeds = _feeds(model)
        off = _off(run(path, feeds), reference(path, [feeds])[0])
        assert (off > 0.01) == differs, off
