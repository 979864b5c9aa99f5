"""Value domains read off the graph: Gather-table indices, one-hot codes, masks compared with
0/1 or used as `1 - x`, `If` conditions on an input; generated data from them runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.core.contract import Contract, DimRange, ValueDomain
from compiler.pipeline.data import generate_feeds, resolve_domains
from compiler.pipeline.domains import infer_domains
from compiler.pipeline.interface import extract_contract

OPSET = [helper.make_opsetid("", 17)]


def _model(nodes: list, inputs: list, outputs: list, inits: list | None = None) -> onnx.ModelProto:
    m = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, inits or []), opset_imports=OPSET
    )
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _infer(m: onnx.ModelProto) -> dict[str, ValueDomain]:
    return infer_domains(m, extract_contract(m).inputs)


def _inferred(m: onnx.ModelProto) -> Contract:
    """The contract with the graph's domains, as normalize makes it."""
    c = extract_contract(m)
    d = infer_domains(m, c.inputs)
    return c.model_copy(
        update={"inputs": [t.model_copy(update={"domain": d.get(t.name)}) for t in c.inputs]}
    )


def _runs(m: onnx.ModelProto, domains: dict[str, ValueDomain]) -> bool:
    """Does ONNX Runtime run every generated feed drawn from these domains?"""
    c = extract_contract(m)
    c.dims = {d: c.dims.get(d) or DimRange(opt=4) for d in c.input_dims()}
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        for feed in generate_feeds(c, 4, 0, domains):
            sess.run(None, feed)
    except Exception:
        return False
    return True


def _bert_embeddings() -> onnx.ModelProto:
    """ids -> word table (initializer, through Cast), token types -> a 2-row Constant table."""
    rng = np.random.default_rng(0)
    word = numpy_helper.from_array(rng.normal(size=(50, 4)).astype(np.float32), "word")
    types = helper.make_node(
        "Constant",
        [],
        ["types"],
        value=numpy_helper.from_array(rng.normal(size=(2, 4)).astype(np.float32)),
    )
    nodes = [
        types,
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["word", "ids32"], ["w"], name="word_lookup"),
        helper.make_node("Gather", ["types", "tt"], ["t"], name="type_lookup"),
        helper.make_node("Add", ["w", "t"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("ids", "tt")
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])
    return _model(nodes, inputs, [y], [word])


def test_gather_indices_take_the_tables_rows() -> None:
    m = _bert_embeddings()
    d = _infer(m)
    assert (d["ids"].low, d["ids"].high) == (0, 49)
    assert "table 'word' of 50 rows" in d["ids"].source
    assert (d["tt"].low, d["tt"].high) == (0, 1)  # token types: 0 and 1, never 0..9
    assert _runs(m, resolve_domains(_inferred(m), {}))
    defaults = {n: ValueDomain(low=0, high=9) for n in ("ids", "tt")}
    assert not _runs(m, defaults)  # what the default integer domain did to a BERT


@pytest.mark.parametrize("op", ["GatherElements", "ScatterElements"])
def test_element_indices_take_their_axis_size(op: str) -> None:
    """A scatter-add of per-token scores into 8 slots (indices an input): the default 0..9
    drew indices past the axis ('indices element out of data bounds') and stopped the build.
    The axis' size is read where it is known, though another dim is dynamic."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = ["data", "idx"] + (["upd"] if op == "ScatterElements" else [])
    m = _model(
        [helper.make_node(op, inputs, ["y"], axis=1)],
        [
            helper.make_tensor_value_info("data", f, ["N", 8]),
            helper.make_tensor_value_info("idx", i64, ["N", 8]),
            *(
                [helper.make_tensor_value_info("upd", f, ["N", 8])]
                if op == "ScatterElements"
                else []
            ),
        ],
        [helper.make_tensor_value_info("y", f, ["N", 8])],
    )
    d = _infer(m)
    assert (d["idx"].low, d["idx"].high) == (0, 7) and op in d["idx"].source
    assert _runs(m, resolve_domains(_inferred(m), {}))
    assert not _runs(m, {**resolve_domains(_inferred(m), {}), "idx": ValueDomain(low=0, high=9)})


def test_scatter_into_zeros_like_takes_the_size_data_propagation_gives() -> None:
    """TorchScript writes torch.zeros_like(y).scatter_add(1, idx, y) with the zeros made by
    ConstantOfShape(Shape(y)), whose shape plain shape inference leaves unknown: data
    propagation gives [N, 8], so idx takes 0..7."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    m = _model(
        [
            helper.make_node("Shape", ["y"], ["shape"]),
            helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
            helper.make_node("ScatterElements", ["zeros", "idx", "y"], ["z"], axis=1),
        ],
        [
            helper.make_tensor_value_info("y", f, ["N", 8]),
            helper.make_tensor_value_info("idx", i64, ["N", 8]),
        ],
        [helper.make_tensor_value_info("z", f, ["N", 8])],
    )
    d = _infer(m)
    assert (d["idx"].low, d["idx"].high) == (0, 7)
    assert _runs(m, resolve_domains(_inferred(m), {}))


def test_an_input_used_by_two_tables_takes_the_smaller() -> None:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(50, 4)).astype(np.float32), "big"),
        numpy_helper.from_array(rng.normal(size=(30, 4)).astype(np.float32), "small"),
    ]
    nodes = [
        helper.make_node("Gather", ["big", "ids"], ["a"]),
        helper.make_node("Gather", ["small", "ids"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    d = _infer(_model(nodes, [ids], [y], inits))
    assert (d["ids"].low, d["ids"].high) == (0, 29)


def test_one_hot_and_comparison_with_many_constants_are_codes() -> None:
    depth = numpy_helper.from_array(np.asarray(257, np.int64), "depth")
    onoff = numpy_helper.from_array(np.asarray([0.0, 1.0], np.float32), "onoff")
    codes = numpy_helper.from_array(np.arange(257, dtype=np.int32).reshape(1, 1, 257), "codes")
    axes = numpy_helper.from_array(np.asarray([-1], np.int64), "axes")
    nodes = [
        helper.make_node("OneHot", ["a", "depth", "onoff"], ["ha"]),
        helper.make_node("Unsqueeze", ["b", "axes"], ["bu"]),
        helper.make_node("Equal", ["bu", "codes"], ["hb_bool"], name="one_hot_by_equal"),
        helper.make_node("Cast", ["hb_bool"], ["hb"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["ha", "hb"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, ["n", 16]) for n in "ab"]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16, 257])
    d = _infer(_model(nodes, inputs, [y], [depth, onoff, codes, axes]))
    assert (d["a"].low, d["a"].high) == (0, 256) and "OneHot" in d["a"].source
    assert (d["b"].low, d["b"].high) == (0, 256) and "one_hot_by_equal" in d["b"].source


def test_masks_are_flags() -> None:
    zero = numpy_helper.from_array(np.asarray(0, np.int64), "zero")
    one = numpy_helper.from_array(np.asarray(1.0, np.float32), "one")
    big = numpy_helper.from_array(np.asarray(-1e4, np.float32), "big")
    nothing = numpy_helper.from_array(np.asarray(0.0, np.float32), "nothing")
    nodes = [
        helper.make_node("Equal", ["m", "zero"], ["masked"], name="is_pad"),
        helper.make_node("Where", ["masked", "big", "nothing"], ["bias"]),
        helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "kf"], ["inv"], name="hf_mask"),
        helper.make_node("Sub", ["one", "f"], ["finv"]),  # a float input: arithmetic, not a mask
        helper.make_node("Add", ["bias", "inv"], ["s"]),
        helper.make_node("Add", ["s", "finv"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("m", TensorProto.INT64, ["n", 8]),
        helper.make_tensor_value_info("k", TensorProto.INT64, ["n", 8]),
        helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 8]),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])
    d = _infer(_model(nodes, inputs, [y], [zero, one, big, nothing]))
    assert d["m"].values == [0, 1] and "is_pad" in d["m"].source
    assert d["k"].values == [0, 1] and "1 - x" in d["k"].source
    assert "f" not in d


def _if_on_rate() -> onnx.ModelProto:
    """`If sr == 16000`: the then branch takes 4 samples, the else branch needs 8."""
    shape4 = numpy_helper.from_array(np.asarray([1, 4], np.int64), "shape4")
    shape8 = numpy_helper.from_array(np.asarray([1, 8], np.int64), "shape8")
    out = helper.make_tensor_value_info("r", TensorProto.FLOAT, None)
    then = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape4"], ["r"])], "then", [], [out], [shape4]
    )
    other = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape8"], ["r"])], "else", [], [out], [shape8]
    )
    rate = helper.make_node(
        "Constant", [], ["rate"], value=numpy_helper.from_array(np.asarray(16000, np.int64))
    )
    nodes = [
        rate,
        helper.make_node("Equal", ["sr", "rate"], ["is16k"], name="rate_check"),
        helper.make_node("If", ["is16k"], ["y"], then_branch=then, else_branch=other),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
    ]
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])


def test_if_condition_on_an_input_picks_the_tested_value() -> None:
    m = _if_on_rate()
    d = _infer(m)
    assert d["sr"].values == [16000] and "rate_check" in d["sr"].source
    assert "x" not in d
    inferred = _inferred(m)
    domains = resolve_domains(inferred, {})
    feeds = generate_feeds(inferred, 3, 0, domains)
    assert all(f["sr"].shape == () and int(f["sr"]) == 16000 for f in feeds)
    assert _runs(m, domains)
    assert not _runs(m, {**domains, "sr": ValueDomain(low=0, high=9)})  # the wrong branch


def test_a_float_input_compared_outside_an_if_has_no_domain() -> None:
    half = numpy_helper.from_array(np.asarray(0.5, np.float32), "half")
    nodes = [
        helper.make_node("Equal", ["x", "half"], ["e"]),
        helper.make_node("Cast", ["e"], ["y"], to=TensorProto.FLOAT),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    assert _infer(_model(nodes, [x], [y], [half])) == {}


@pytest.mark.parametrize("dtype", [TensorProto.INT64, TensorProto.INT32])
def test_uninformative_graph_leaves_the_default(dtype: int) -> None:
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    x = helper.make_tensor_value_info("x", dtype, ["n"])
    y = helper.make_tensor_value_info("y", dtype, ["n"])
    m = _model(nodes, [x], [y])
    assert _infer(m) == {}
    domains = resolve_domains(extract_contract(m), {})
    assert (domains["x"].low, domains["x"].high) == (0, 9)
    assert domains["x"].source.startswith("default for int")


def _lstm(layout: int, x_shape: list) -> onnx.ModelProto:
    """An LSTM reading its sequence lengths from the input `lens` (int32, one per batch row)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(1, 32, 4)).astype(np.float32), "w")
    r = numpy_helper.from_array(rng.normal(size=(1, 32, 8)).astype(np.float32), "r")
    batch = x_shape[1 - layout] if layout == 0 else x_shape[0]
    node = helper.make_node(
        "LSTM", ["x", "w", "r", "", "lens"], ["", "h"], name="rnn", hidden_size=8, layout=layout
    )
    h_shape = [1, batch, 8] if layout == 0 else [batch, 1, 8]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
        helper.make_tensor_value_info("lens", TensorProto.INT32, [batch]),
    ]
    out = helper.make_tensor_value_info("h", TensorProto.FLOAT, h_shape)
    return _model([node], inputs, [out], [w, r])


@pytest.mark.parametrize(
    ("layout", "x_shape"), [(0, ["t", "b", 4]), (1, ["b", "t", 4]), (0, [6, "b", 4])]
)
def test_sequence_lengths_end_at_their_sequence(layout: int, x_shape: list) -> None:
    """ONNX Runtime refuses a length past the sequence's end, and the int default 0..9 has
    them: generated data failed on the reference at any sequence shorter than 9. Lengths now
    run 1..the sequence's length, in each feed (a symbolic length) or fixed."""
    m = _lstm(layout, x_shape)
    d = _infer(m)["lens"]
    assert d.low == 1 and "sequence lengths of LSTM 'rnn'" in d.source
    if "t" in x_shape:
        assert d.high_dim == "t" and d.describe() == "1..t"
    else:
        assert (d.high, d.high_dim) == (6, "")
    if layout == 1:
        return  # ONNX Runtime runs no batch-first recurrent op (its LSTM refuses layout 1)
    inferred = _inferred(m)
    domains = resolve_domains(inferred, {})
    assert _runs(m, domains)  # every dim at 4
    assert not _runs(m, {**domains, "lens": ValueDomain(low=0, high=9)})
    if "t" in x_shape:
        inferred.dims = {"t": DimRange(opt=3), "b": DimRange(opt=16)}
        lens = np.concatenate([f["lens"] for f in generate_feeds(inferred, 4, 0, domains)])
        assert lens.min() >= 1 and lens.max() == 3


def test_reverse_sequence_lengths_end_at_the_time_axis() -> None:
    node = helper.make_node(
        "ReverseSequence", ["x", "lens"], ["y"], name="rev", batch_axis=0, time_axis=1
    )
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t"]),
        helper.make_tensor_value_info("lens", TensorProto.INT64, ["b"]),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t"])
    m = _model([node], inputs, [y])
    d = _infer(m)["lens"]
    assert (d.low, d.high_dim) == (1, "t") and "ReverseSequence 'rev'" in d.source
    assert _runs(m, resolve_domains(_inferred(m), {}))


class _MaskedMean(__import__("torch").nn.Module):
    """A padded batch's mean over its valid frames: `arange(T) < lengths[:, None]`."""

    def forward(self, x, lengths):  # type: ignore[no-untyped-def]
        import torch

        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        return (x * mask[..., None]).sum(1) / lengths[:, None]


@pytest.mark.parametrize("dynamo", [False, True])
def test_lengths_compared_with_positions_end_at_that_axis(tmp_path, dynamo: bool) -> None:
    """A speech or text encoder's lengths make its padding mask by comparison with the
    positions of the time axis. The int default 0..9 left all but 9 of 224 frames padding
    in every generated feed; they now run 1..the time axis' length, in each feed."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "masked.onnx"
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 3])
    dynamic = {"x": {0: "b", 1: "t"}, "lengths": {0: "b"}}
    options = {"dynamic_shapes": {"x": {0: torch.export.Dim("b"), 1: torch.export.Dim("t")},
                                  "lengths": {0: torch.export.Dim("b")}}} if dynamo else {
        "dynamic_axes": dynamic}  # fmt: skip
    torch.onnx.export(_MaskedMean(), (x, lengths), str(path), input_names=["x", "lengths"],
                      output_names=["y"], dynamo=dynamo, **options)  # fmt: skip
    m = onnx.load(str(path))
    c = _inferred(m)
    d = next(t.domain for t in c.inputs if t.name == "lengths")
    time_dim = next(t for t in c.inputs if t.name == "x").shape[1]
    assert d is not None and (d.low, d.high_dim) == (1, time_dim), d
    assert "lengths compared with positions by Less" in d.source
    c.dims = {time_dim: DimRange(opt=7), c.inputs[0].shape[0]: DimRange(opt=16)}
    feeds = generate_feeds(c, 4, 0, resolve_domains(c, {}))
    lens = np.concatenate([f["lengths"] for f in feeds])
    assert lens.min() >= 1 and lens.max() == 7 and len(set(lens.tolist())) > 3


def test_lengths_compared_with_the_positions_of_a_fixed_axis_end_there() -> None:
    nodes = [
        helper.make_node("Range", ["zero", "ten", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["lens", "axis1"], ["lens2"]),
        helper.make_node("Greater", ["lens2", "pos"], ["mask"], name="valid"),
        helper.make_node("Cast", ["mask"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in (("zero", 0), ("ten", 10), ("one", 1))
    ] + [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    lens = helper.make_tensor_value_info("lens", TensorProto.INT64, ["b"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 10])
    d = _infer(_model(nodes, [lens], [y], inits))["lens"]
    assert (d.low, d.high, d.high_dim) == (1, 10, "")
    assert d.source == "lengths compared with positions by Greater 'valid', of an axis 10 long"


@pytest.mark.parametrize("limit", ["conv", "max"])
def test_lengths_compared_with_positions_of_an_axis_no_input_dim_names_are_never_0(
    limit: str,
) -> None:
    """After a Conv, shape inference names the time axis apart ('unk__0'), and a mask as
    long as the longest length has no input dim at all: nothing bounds the lengths. Lengths
    of 0 (the int default's) masked every frame, and the mean over none made NaN: the
    default build stopped. They now draw 1..9."""
    length = [
        helper.make_node("Shape", ["h"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["t"]),
    ]
    if limit == "max":
        length = [helper.make_node("ReduceMax", ["lens"], ["t"], keepdims=0)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1]),
        *length,
        helper.make_node("Range", ["zero", "t", "one"], ["pos"]),
        helper.make_node("Unsqueeze", ["lens", "axis1"], ["lens2"]),
        helper.make_node("GreaterOrEqual", ["pos", "lens2"], ["pad"], name="padding"),
        helper.make_node("Cast", ["pad"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = [numpy_helper.from_array(np.ones((2, 3, 3), np.float32), "w")] + [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in (("two", 2), ("zero", 0), ("one", 1))
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "frames"]),
        helper.make_tensor_value_info("lens", TensorProto.INT64, ["b"]),
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "t"])
    d = _infer(_model(nodes, inputs, [y], inits))["lens"]
    assert (d.low, d.high, d.high_dim) == (1, 9, "")
    assert "GreaterOrEqual 'padding', of an axis whose length is no input dim's" in d.source


def test_a_fused_embedding_s_ids_and_mask_take_its_tables() -> None:
    """ONNX Runtime's transformer optimizer fuses BERT's embeddings into one
    com.microsoft EmbedLayerNormalization. Its token type ids drew the int default 0..9
    against a table of 2 rows, every size failed ('input index out of range'), and the
    default build of the fused model stopped with 'no size the model accepts'."""
    tables = {"words": 50, "positions": 16, "segments": 2}
    inits = [
        numpy_helper.from_array(np.zeros((rows, 4), np.float32), name)
        for name, rows in tables.items()
    ] + [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("gamma", "beta")]
    nodes = [
        helper.make_node("Cast", [name], [f"{name}32"], to=TensorProto.INT32)
        for name in ("ids", "types", "mask")
    ]
    nodes.append(
        helper.make_node(
            "EmbedLayerNormalization",
            ["ids32", "types32", "words", "positions", "segments", "gamma", "beta", "mask32"],
            ["y", "mask_index"],
            name="embed",
            domain="com.microsoft",
        )
    )
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
        for n in ("ids", "types", "mask")
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s", 4])
    graph = helper.make_graph(nodes, "g", inputs, [y], inits)
    m = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("com.microsoft", 1)])
    d = _infer(m)
    assert (d["ids"].low, d["ids"].high) == (0, 49)
    assert (d["types"].low, d["types"].high) == (0, 1)
    assert "table 'segments' of 2 rows" in d["types"].source
    assert d["mask"].values == [0, 1]
    assert _runs(m, resolve_domains(_inferred(m), {}))
