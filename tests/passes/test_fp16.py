"""fp16: weights and compute in float16, fp32 at the interface, fragile ops kept in fp32."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from pydantic import ValidationError

from compiler.core.parity import judge, output_metrics
from compiler.core.tolerance import DEFAULT_TOLERANCES
from passes.base import op_histogram
from passes.fp16 import Fp16Config, Fp16Pass
from tests.passes.builders import attention_block, context, parity, small_cnn, smooth_images

FP16 = DEFAULT_TOLERANCES["fp16"]


def _fp16(model: onnx.ModelProto, tmp: Path, **kw: object):  # -> PassResult
    return Fp16Pass(Fp16Config(**kw))(model, context(model, tmp))


def _node_input_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of each node's first input, by node name (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    types |= {t.name: t.data_type for t in model.graph.initializer}
    return {n.name: types.get(n.input[0], 0) for n in model.graph.node if n.input}


def test_cnn_runs_in_fp16_with_fp32_interface(tmp_path: Path) -> None:
    model = small_cnn()
    result = _fp16(model, tmp_path)
    out = result.model
    assert out.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert out.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    conv_w = {n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert {inits[w] for w in conv_w} == {onnx.TensorProto.FLOAT16}
    assert op_histogram(out)["Cast"] >= 2  # into fp16 after the input, back before the output
    assert result.record["casts_added"] >= 2
    weight_bytes = {t.name: len(t.raw_data) for t in out.graph.initializer}
    assert weight_bytes["w2"] == 8 * 8 * 3 * 3 * 2  # half of fp32
    m = parity(model, out, smooth_images(8, seed=4))["y"]
    assert judge(m, FP16) == []  # class probabilities: decided top-1
    assert m.rel_l2 is not None and m.rel_l2 <= FP16.max_rel_l2  # and close in value


def test_fragile_ops_stay_fp32(tmp_path: Path) -> None:
    model = attention_block()
    out = _fp16(model, tmp_path).model
    types = _node_input_types(out)
    assert types["ln_mean"] == onnx.TensorProto.FLOAT  # reduction
    assert types["ln_pow"] == onnx.TensorProto.FLOAT
    assert types["softmax"] == onnx.TensorProto.FLOAT
    cnn = _node_input_types(_fp16(small_cnn(), tmp_path).model)
    assert cnn["gap"] == onnx.TensorProto.FLOAT  # an average is a sum: TVM sums it in fp16
    assert types["q"] == onnx.TensorProto.FLOAT16  # MatMul runs in fp16


def test_softmax_in_fp16_when_asked(tmp_path: Path) -> None:
    out = _fp16(attention_block(), tmp_path, keep_softmax_fp32=False).model
    assert _node_input_types(out)["softmax"] == onnx.TensorProto.FLOAT16


def test_bf16_is_refused_with_the_alternative() -> None:
    with pytest.raises(ValidationError, match="ask the backend for bf16"):
        Fp16Config(precision="bf16")


def test_deterministic(tmp_path: Path) -> None:
    model = attention_block()
    a = _fp16(model, tmp_path).model.SerializeToString(deterministic=True)
    b = _fp16(model, tmp_path).model.SerializeToString(deterministic=True)
    assert a == b


def test_an_already_quantized_models_integer_ops_stay_fp32(tmp_path: Path) -> None:
    """A dynamically quantized model (ONNX Runtime's quantize_dynamic, as ddddocr's OCR model
    ships) holds DynamicQuantizeLinear, whose input must be float32: converted to float16,
    ONNX Runtime refuses the model. The integer ops are blocked; the rest runs in float16."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = tmp_path / "cnn.onnx"
    onnx.save(small_cnn(), source)
    quantize_dynamic(source, tmp_path / "dyn.onnx", weight_type=QuantType.QUInt8)
    model = onnx.load(tmp_path / "dyn.onnx")
    assert "DynamicQuantizeLinear" in op_histogram(model)
    result = _fp16(model, tmp_path)
    assert "DynamicQuantizeLinear" in result.record["blocked_op_types_present"]
    assert result.record["kept_float32_as_rejected_in_fp16"] == []
    types = _node_input_types(result.model)
    quant = [n.name for n in result.model.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert quant and {types[n] for n in quant} == {onnx.TensorProto.FLOAT}
    assert onnx.TensorProto.FLOAT16 in types.values()  # the float ops that can, in fp16
    m = parity(model, result.model, smooth_images(8, seed=4))["y"]
    assert judge(m, FP16) == []


def test_an_op_onnx_runtime_rejects_in_fp16_stays_fp32(tmp_path: Path) -> None:
    """Celu's schema takes float32 only: ONNX Runtime refuses the float16 model, naming the
    node; its op type is kept float32 and the model converted again."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), "w")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
            helper.make_node("Celu", ["h"], ["y"], name="celu"),
        ],
        "celu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = _fp16(model, tmp_path)
    assert result.record["kept_float32_as_rejected_in_fp16"] == ["Celu"]
    types = _node_input_types(result.model)
    assert types["celu"] == onnx.TensorProto.FLOAT and types["mm"] == onnx.TensorProto.FLOAT16
    feeds = [
        {"x": np.random.default_rng(i).normal(size=(4, 8)).astype(np.float32)} for i in range(4)
    ]
    assert judge(parity(model, result.model, feeds)["y"], FP16) == []


def _sum_of_squares() -> onnx.ModelProto:
    """y = sqrt(mean(x^2)) over 512 values: a norm's statistics. The block-listed ReduceSum
    computes in float32, but its sum (~460800 for x ~ 30) is more than fp16 holds."""
    h = onnx.helper
    nodes = [
        h.make_node("Mul", ["x", "x"], ["sq"], name="square"),
        h.make_node("ReduceSum", ["sq", "axes"], ["total"], name="sum", keepdims=1),
        h.make_node("Mul", ["total", "inv_n"], ["mean"], name="mean"),
        h.make_node("Sqrt", ["mean"], ["rms"], name="root"),
        h.make_node("Mul", ["rms", "one"], ["y"], name="scale"),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.asarray([1], np.int64), "axes"),
        onnx.numpy_helper.from_array(np.asarray([1 / 512], np.float32), "inv_n"),
        onnx.numpy_helper.from_array(np.asarray([1.0], np.float32), "one"),
    ]
    graph = h.make_graph(
        nodes,
        "rms",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 512])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 1])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_value_fp16_cannot_hold_stays_float32_on_the_calibration_data(tmp_path: Path) -> None:
    """Judged in fp16 arithmetic (onnx's reference evaluator: numpy, fp16 as fp16, as a GPU
    or TVM computes it; ONNX Runtime CPU computes such ops in float32 and hides the overflow).
    Without calibration feeds the sum is cast to fp16 and is inf; with them, the nodes around
    it stay float32, and no float32 -> fp16 -> float32 round trip is left between them."""
    from onnx.reference import ReferenceEvaluator

    model = _sum_of_squares()
    feed = {"x": np.random.default_rng(0).normal(30.0, 1.0, (1, 512)).astype(np.float32)}
    want = float(np.sqrt(np.mean(feed["x"].astype(np.float64) ** 2)))

    blind = Fp16Pass(Fp16Config())(model, context(model, tmp_path, []))
    assert blind.record["range_probe"] == "not run: no calibration feeds or samples"
    assert np.isinf(ReferenceEvaluator(blind.model).run(None, feed)[0]).all()

    guarded = Fp16Pass(Fp16Config())(model, context(model, tmp_path, [feed]))
    got = float(ReferenceEvaluator(guarded.model).run(None, feed)[0].ravel()[0])
    assert abs(got - want) <= 1e-2 * want
    kept = guarded.record["kept_float32_for_range"]
    assert kept["nodes"] >= 2 and list(kept["tensors"]) == ["total"]  # made by sum, read by mean
    assert guarded.record["fp32_round_trips_removed"] >= 1
    assert not [n for n in guarded.model.graph.node if n.op_type == "Cast" and "total" in n.input]
    # a parity sample reaches it where calibration does not (small calibration values)
    quiet = {"x": feed["x"] / 30}
    ctx = context(model, tmp_path, [quiet], validation=lambda: [feed])
    by_samples = Fp16Pass(Fp16Config())(model, ctx)
    got = float(ReferenceEvaluator(by_samples.model).run(None, feed)[0].ravel()[0])
    assert abs(got - want) <= 1e-2 * want and by_samples.record["range_probe"].startswith("2 feeds")


def _gated_mlp() -> onnx.ModelProto:
    """x [1, 4] -> MatMul w0 -> If(sum >= 0, then: MatMul w1 -> ReduceMean, else: ReduceMax):
    a block-listed op in each branch, as silero_vad's STFT and openwakeword's classifiers."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    then = helper.make_graph(
        [
            helper.make_node("MatMul", ["h", "w1"], ["g"], name="mm1"),
            helper.make_node("ReduceMean", ["g"], ["y_then"], keepdims=1, name="mean"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("ReduceMax", ["h"], ["y_else"], keepdims=1, name="max")],
        "else",
        [],
        [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], name="mm0"),
        helper.make_node("ReduceSum", ["h"], ["total"], keepdims=1, name="sum"),
        helper.make_node("GreaterOrEqual", ["total", "zero"], ["cond"], name="ge"),
        helper.make_node("If", ["cond"], ["y"], name="gate", then_branch=then, else_branch=other),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 4)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 4)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    graph = helper.make_graph(
        nodes,
        "gated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_an_if_whose_branches_hold_blocked_ops_stays_float32_whole(tmp_path: Path) -> None:
    """ONNX Runtime's converter puts the Casts around a block-listed node in an If branch into
    the main graph, where the tensor they read does not exist; the pass then keeps that If
    float32 whole, reading float32 copies of the outer tensors, the rest fp16, and says so."""
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _gated_mlp()
    blocked = Fp16Pass(Fp16Config())._blocked_ops()
    plain = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
    with pytest.raises(Exception, match="does not exist|is not a graph input"):
        ort.InferenceSession(plain.SerializeToString(), providers=["CPUExecutionProvider"])
    result = _fp16(model, tmp_path)
    assert result.record["kept_float32_for_blocked_ops_in_branches"] == ["gate"]
    inits = {t.name: t.data_type for t in result.model.graph.initializer}
    assert inits["w0"] == onnx.TensorProto.FLOAT16  # the main graph's MatMul runs in fp16
    feeds = [{"x": np.array([[s, 0.5 * s, -0.25 * s, s]], np.float32)} for s in (1.0, -1.0)]
    reference = [dict(zip(["y"], ort_run(model, f), strict=True)) for f in feeds]
    assert reference[0]["y"].item() != reference[1]["y"].item()  # each feed takes a branch
    outputs = parity(model, result.model, feeds)
    assert judge(outputs["y"], FP16) == []


def ort_run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def test_a_model_without_branches_records_none_kept_for_them(tmp_path: Path) -> None:
    result = _fp16(small_cnn(), tmp_path)
    assert result.record["kept_float32_for_blocked_ops_in_branches"] == []


def test_a_transformer_with_a_bool_padding_mask_converts(tmp_path: Path) -> None:
    """torch's TransformerEncoder with a bool padding mask, exported: ONNX Runtime 1.32
    crashed (SIGSEGV) loading its fp16 conversion with every optimization on (an AMX host);
    the pass checks each node has a kernel for its types at the basic level, and the model
    it returns runs there and keeps the float model's outputs within fp16's bounds."""
    import io

    import onnxruntime as ort

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(1000, 16)
            layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
            self.enc = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

        def forward(self, ids: Any, pad: Any) -> Any:
            return self.enc(self.emb(ids), src_key_padding_mask=pad)

    ids = torch.randint(0, 1000, (1, 16))
    pad = torch.zeros(1, 16, dtype=torch.bool)
    pad[0, 12:] = True
    buf = io.BytesIO()
    torch.onnx.export(
        Encoder().eval(),
        (ids, pad),
        buf,
        opset_version=17,
        dynamo=False,
        input_names=["ids", "pad"],
        output_names=["h"],
        dynamic_axes={"ids": {0: "N", 1: "T"}, "pad": {0: "N", 1: "T"}},
    )
    model = onnx.load_from_string(buf.getvalue())
    result = _fp16(model, tmp_path)
    assert result.model is not None and not result.skipped
    types = _node_input_types(result.model)
    assert any(t == onnx.TensorProto.FLOAT16 for n, t in types.items() if "MatMul" in n)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    feed = {"ids": ids.numpy(), "pad": pad.numpy()}
    half = ort.InferenceSession(result.model.SerializeToString(), so).run(None, feed)[0]
    full = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
    assert judge(output_metrics([half], [full]), FP16) == []


def test_outputs_that_are_an_initializer_or_an_input_convert(tmp_path: Path) -> None:
    """A detector that returns its anchors, an initializer, as an output, and a model that
    passes an input through: the float16 converter cast each back to float32 under the
    output's own name, and ONNX Runtime refused the model ("Duplicate definition of name
    (anchors)", "... (x)"): the fp16 pass, and tvm-fp16 with it, failed."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    f = onnx.TensorProto.FLOAT
    anchors = rng.random((6, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "anchors",
        [helper.make_tensor_value_info("x", f, ["N", 8])],
        [
            helper.make_tensor_value_info("y", f, ["N", 4]),
            helper.make_tensor_value_info("anchors", f, [6, 4]),
            helper.make_tensor_value_info("x", f, ["N", 8]),
        ],
        [
            numpy_helper.from_array(rng.normal(0, 1, (8, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(anchors, "anchors"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": rng.normal(0, 1, (2, 8)).astype(np.float32)}]
    out = Fp16Pass(Fp16Config())(model, context(model, tmp_path, feeds)).model
    assert [o.name for o in out.graph.output] == ["y", "anchors", "x"]
    got = parity(model, out, feeds)
    assert got["anchors"].max_abs_err < 1e-3 and got["y"].max_abs_err < 1e-2
    assert got["x"].max_abs_err == 0


def test_a_model_in_fp16_already_is_left_as_it_is(tmp_path: Path) -> None:
    """A model ONNX Runtime's converter made fp16 with keep_io_types (a shipped fp16 BERT):
    converting it again named its new interface casts as the first conversion had
    (graph_output_cast0), and ONNX Runtime refused the result ("two nodes with same node
    name"), failing its TVM fp16 artifact."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(small_cnn(), keep_io_types=True)
    assert any(n.name == "graph_output_cast0" for n in half.graph.node)
    result = _fp16(half, tmp_path)
    assert result.model.SerializeToString() == half.SerializeToString()
    assert "fp16 already" in result.record["already_fp16"]
