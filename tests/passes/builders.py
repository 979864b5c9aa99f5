"""Tiny models and data for pass tests, built in code with onnx.helper.

Each builder makes the smallest graph that shows one pass's job: foldable shape chains and
Constant-node weights (simplify), Conv+BatchNorm and a decomposed LayerNorm with attention
(fuse), a CNN with smooth images (quantize), an activation with one huge channel that plain
int8 cannot hold (accuracy-aware).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.core.parity import OutputParity
from compiler.pipeline.interface import extract_contract
from passes.base import PassContext

__all__ = [
    "attention_block",
    "context",
    "in_if_branches",
    "outlier_lstm",
    "outlier_mlp",
    "parity",
    "run",
    "small_cnn",
    "smooth_images",
]

_F = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto], inputs: list, outputs: list, inits: list, opset: int = 17
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _conv_weight(rng: np.random.Generator, cout: int, cin: int) -> np.ndarray:
    return (rng.normal(0, 1, (cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)


def small_cnn(
    seed: int = 0, constant_weights: bool = False, batch: str | int = "N"
) -> onnx.ModelProto:
    """x[N,3,16,16] -> Conv-BN-Relu -> Conv-Relu -> GAP -> Flatten -> Gemm -> Softmax [N,4].

    Also an Identity and a Shape->Gather->Concat->Reshape chain that simplify folds. With
    `constant_weights` the conv weights are Constant nodes (as in ppocr_rec.onnx); with a
    fixed `batch` the whole shape chain is constant.
    """
    rng = np.random.default_rng(seed)
    w1, w2 = _conv_weight(rng, 8, 3), _conv_weight(rng, 8, 8)
    tensors = {
        "w1": w1,
        "b1": rng.normal(0, 0.1, 8).astype(np.float32),
        "w2": w2,
        "b2": rng.normal(0, 0.1, 8).astype(np.float32),
        "bn_scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bn_bias": rng.normal(0, 0.1, 8).astype(np.float32),
        "bn_mean": rng.normal(0, 0.1, 8).astype(np.float32),
        "bn_var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "fc_w": (rng.normal(0, 1, (4, 8)) / np.sqrt(8)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, 4).astype(np.float32),
        "zero": np.array([0], dtype=np.int64),
        "minus_one": np.array([-1], dtype=np.int64),
    }
    as_constants = {"w1", "w2"} if constant_weights else set()
    nodes = [
        helper.make_node(
            "Constant", [], [k], name=f"const_{k}", value=numpy_helper.from_array(v, k)
        )
        for k, v in tensors.items()
        if k in as_constants
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in tensors.items() if k not in as_constants]
    nodes += [
        helper.make_node("Identity", ["x"], ["x_id"], name="identity"),
        helper.make_node("Conv", ["x_id", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
            ["bn1"],
            name="bn1",
        ),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Shape", ["gap"], ["gap_shape"], name="shape"),
        helper.make_node("Gather", ["gap_shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Concat", ["n", "minus_one"], ["flat_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", _F, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", _F, [batch, 4])],
        inits,
    )


def smooth_images(count: int, seed: int = 0, size: int = 16) -> list[dict[str, np.ndarray]]:
    """Real-looking images: low-frequency blobs and gradients, not uniform noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    feeds = []
    for _ in range(count):
        img = np.zeros((3, size, size), np.float32)
        for c in range(3):
            for _ in range(3):
                fy, fx, ph = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.uniform(0, 6.3)
                img[c] += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
            cy, cx = rng.uniform(0, 1, 2)
            img[c] += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.05)
        feeds.append({"x": img[None].astype(np.float32)})
    return feeds


def outlier_mlp(seed: int = 0, outlier: float = 2000.0) -> onnx.ModelProto:
    """x[N,16] -> MatMul -> Tanh -> MatMul -> y[N,10] (class scores).

    One hidden channel is `outlier` times larger than the rest before Tanh: one int8 scale
    for that tensor leaves the other channels a step or two, so plain int8 fails the gate;
    keeping the first MatMul in float fixes it.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(0, 1, (16, 32)) / 4).astype(np.float32)
    w1[:, 7] *= outlier
    w2 = (rng.normal(0, 1, (32, 10)) / np.sqrt(32)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Tanh", ["h"], ["t"], name="tanh"),
        helper.make_node("MatMul", ["t", "w2"], ["y"], name="mm2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", _F, ["N", 16])],
        [helper.make_tensor_value_info("y", _F, ["N", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )


def outlier_lstm(seed: int = 0, outlier: float = 1000.0) -> onnx.ModelProto:
    """x[T=6,N,8] -> Mul(scale) -> LSTM -> LSTM -> last hidden state -> MatMul -> y[N,10].

    The Mul makes input feature 0 `outlier` times larger and the first LSTM's weights for it
    `outlier` times smaller, so the float model computes what an ordinary LSTM would; but
    dynamic int8 quantizes the first LSTM's input with one scale for the whole tensor, which
    leaves the other seven features a step or two (a log-mel input with one loud band, made
    small). Keeping that LSTM in float fixes it; the second one sees states in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    hidden, feat, classes = 16, 8, 10
    scale = np.ones(feat, np.float32)
    scale[0] = outlier

    def lstm_weights(inputs: int) -> dict[str, np.ndarray]:
        s = 1 / np.sqrt(hidden)
        return {
            "W": rng.uniform(-s, s, (1, 4 * hidden, inputs)).astype(np.float32),
            "R": rng.uniform(-s, s, (1, 4 * hidden, hidden)).astype(np.float32),
            "B": rng.uniform(-s, s, (1, 8 * hidden)).astype(np.float32),
        }

    first, second = lstm_weights(feat), lstm_weights(hidden)
    first["W"][:, :, 0] *= 4.0 / outlier  # feature 0 still matters in the float model
    tensors = {
        "scale": scale,
        **{f"{k}1": v for k, v in first.items()},
        **{f"{k}2": v for k, v in second.items()},
        "axis1": np.array([1], np.int64),
        "axis0": np.array([0], np.int64),
        "fc": (rng.normal(0, 1, (hidden, classes)) * 2).astype(np.float32),
    }
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["xs"], name="loud_band"),
        helper.make_node(
            "LSTM", ["xs", "W1", "R1", "B1"], ["y1"], name="lstm1", hidden_size=hidden
        ),
        helper.make_node("Squeeze", ["y1", "axis1"], ["h1"], name="squeeze1"),
        helper.make_node(
            "LSTM", ["h1", "W2", "R2", "B2"], ["", "last"], name="lstm2", hidden_size=hidden
        ),
        helper.make_node("Squeeze", ["last", "axis0"], ["h2"], name="squeeze2"),
        helper.make_node("MatMul", ["h2", "fc"], ["y"], name="fc"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", _F, [6, "N", feat])],
        [helper.make_tensor_value_info("y", _F, ["N", classes])],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )


def in_if_branches(inner: onnx.ModelProto) -> onnx.ModelProto:
    """`inner` as both branches of an If on a new bool input `c` (silero_vad's shape: every
    weighted node inside a branch, out of the quantizers' reach)."""
    branch = onnx.GraphProto()
    branch.CopyFrom(inner.graph)
    del branch.input[:]  # a branch reads the inputs from the outer graph
    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node(
                    "If",
                    ["c"],
                    [o.name for o in inner.graph.output],
                    then_branch=branch,
                    else_branch=branch,
                )
            ],
            "wrapped",
            [*inner.graph.input, helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
            list(inner.graph.output),
        ),
        opset_imports=list(inner.opset_import),
    )
    model.ir_version = inner.ir_version
    return model


def if_reads_if(seed: int = 0) -> onnx.ModelProto:
    """x[1,8], flag -> MatMul -> If on the sum's sign (Relu | Neg) -> `a`; If on `flag`
    (Sigmoid | Tanh of `a`, read from the outer graph) -> MatMul -> y[1,8]. The second If
    lists only `flag` as input, so a sort by listed inputs may put it before the first
    (silero_vad_half's decoder: ONNX Runtime's quantizer does)."""
    rng = np.random.default_rng(seed)

    def if_node(cond: str, src: str, out: str, then_op: str, else_op: str) -> onnx.NodeProto:
        """`out` = then_op(src) if cond else else_op(src), `src` read from the outer graph."""
        branches = {
            f"{part}_branch": helper.make_graph(
                [helper.make_node(op, [src], [f"{out}_{part}"])],
                f"{out}_{part}",
                [],
                [helper.make_tensor_value_info(f"{out}_{part}", _F, None)],
            )
            for part, op in (("then", then_op), ("else", else_op))
        }
        return helper.make_node("If", [cond], [out], name=f"if_{out}", **branches)

    nodes = [
        helper.make_node("MatMul", ["x0", "w"], ["x"], name="mm0"),
        helper.make_node("ReduceSum", ["x0"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"], name="gt"),
        if_node("c", "x", "a", "Relu", "Neg"),
        if_node("flag", "a", "b", "Sigmoid", "Tanh"),
        helper.make_node("MatMul", ["b", "w"], ["y"], name="mm1"),
    ]
    graph = helper.make_graph(
        nodes,
        "if_reads_if",
        [
            helper.make_tensor_value_info("x0", _F, [1, 8]),
            helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", _F, [1, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cancelling_layernorm(seed: int = 0, shift: float = 8.0) -> onnx.ModelProto:
    """x[N,32] -> MatMul(+shift) -> LayerNorm as tf2onnx writes it, the variance as
    E[h^2] - E[h]^2 -> MatMul -> y[N,10] (class scores).

    h's mean is `shift` and its spread ~1: in 8 bits, E[h^2] and E[h]^2 (~shift^2) each
    carry a rounding error larger than their difference, so int8 arithmetic breaks the
    normalization while int8 MatMuls alone are fine (magika's failure, made small).
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.normal(0, 1, (32, 32)) / np.sqrt(32)).astype(np.float32)
    w2 = (rng.normal(0, 1, (32, 10)) / np.sqrt(32)).astype(np.float32)
    consts = {"shift": np.float32(shift), "eps": np.float32(1e-3)}
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="mm1"),
        helper.make_node("Add", ["h0", "shift"], ["h"], name="shift_add"),
        helper.make_node("ReduceMean", ["h"], ["mean"], name="ln_mean", axes=[-1]),
        helper.make_node("Mul", ["h", "h"], ["sq"], name="ln_square"),
        helper.make_node("ReduceMean", ["sq"], ["msq"], name="ln_msq", axes=[-1]),
        helper.make_node("Mul", ["mean", "mean"], ["mean2"], name="ln_mean2"),
        helper.make_node("Sub", ["msq", "mean2"], ["var"], name="ln_var"),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
        helper.make_node("Reciprocal", ["std"], ["inv"], name="ln_inv"),
        helper.make_node("Sub", ["h", "mean"], ["hc"], name="ln_center"),
        helper.make_node("Mul", ["hc", "inv"], ["hn"], name="ln_scale"),
        helper.make_node("MatMul", ["hn", "w2"], ["y"], name="mm2"),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    inits += [numpy_helper.from_array(np.array(v), k) for k, v in consts.items()]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", _F, ["N", 32])],
        [helper.make_tensor_value_info("y", _F, ["N", 10])],
        inits,
        opset=17,
    )


def attention_block(seed: int = 0, opset: int = 17, around_softmax: str = "") -> onnx.ModelProto:
    """x[N,8,16] -> decomposed LayerNorm -> single-head self-attention -> residual [N,8,16].

    `around_softmax`: "nan_guard", the probabilities through Where(IsNaN(p), 0, p) as torch's
    dynamo exporter writes attention; "reshaped", the scores reshaped into Softmax and the
    probabilities unsqueezed and squeezed after it, as tf2onnx writes Keras' attention."""
    rng = np.random.default_rng(seed)
    d = 16

    def w(name: str, shape: tuple[int, ...], scale: float = 0.25) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(0, 1, shape) * scale).astype(np.float32), name)

    inits = [
        w("wq", (d, d)),
        w("wk", (d, d)),
        w("wv", (d, d)),
        w("wo", (d, d)),
        numpy_helper.from_array(np.ones(d, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(d, np.float32), "beta"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
        numpy_helper.from_array(np.array(4.0, np.float32), "sqrt_d"),
    ]
    axes = {"axes": [-1]} if opset < 18 else {}
    mean_in = ["x"] if opset < 18 else ["x", "last_axis"]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "last_axis"))
    var_in = ["sq"] if opset < 18 else ["sq", "last_axis"]
    nodes = [
        helper.make_node("ReduceMean", mean_in, ["mean"], name="ln_mean", **axes),
        helper.make_node("Sub", ["x", "mean"], ["xc"], name="ln_sub"),
        helper.make_node("Pow", ["xc", "two"], ["sq"], name="ln_pow"),
        helper.make_node("ReduceMean", var_in, ["var"], name="ln_var", **axes),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln_add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
        helper.make_node("Div", ["xc", "std"], ["xn"], name="ln_div"),
        helper.make_node("Mul", ["xn", "gamma"], ["xg"], name="ln_mul"),
        helper.make_node("Add", ["xg", "beta"], ["ln"], name="ln_add"),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["ln", "wv"], ["v"], name="v"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node("Div", ["scores", "sqrt_d"], ["scaled"], name="scale"),
        helper.make_node("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx"], name="pv"),
        helper.make_node("MatMul", ["ctx", "wo"], ["proj"], name="o"),
        helper.make_node("Add", ["proj", "x"], ["y"], name="residual"),
    ]
    if around_softmax:
        _around_softmax(nodes, inits, around_softmax)
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", _F, ["N", 8, d])],
        [helper.make_tensor_value_info("y", _F, ["N", 8, d])],
        inits,
        opset=opset,
    )


def _around_softmax(nodes: list[onnx.NodeProto], inits: list, style: str) -> None:
    """attention_block's Softmax as the dynamo exporter or tf2onnx surround it (opset >= 13)."""
    at = next(i for i, n in enumerate(nodes) if n.op_type == "Softmax")
    pv = next(n for n in nodes if n.name == "pv")
    if style == "nan_guard":
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
        pv.input[0] = "probs_safe"
        nodes[at + 1 : at + 1] = [
            helper.make_node("IsNaN", ["probs"], ["probs_nan"], name="isnan"),
            helper.make_node("Where", ["probs_nan", "zero", "probs"], ["probs_safe"], name="where"),
        ]
        return
    assert style == "reshaped", style
    inits += [
        numpy_helper.from_array(np.array([0, 8, 8], np.int64), "scores_shape"),
        numpy_helper.from_array(np.array([1], np.int64), "one_axis"),
    ]
    nodes[at].input[0] = "scaled_r"
    pv.input[0] = "probs_sq"
    nodes[at:at] = [helper.make_node("Reshape", ["scaled", "scores_shape"], ["scaled_r"])]
    nodes[at + 2 : at + 2] = [
        helper.make_node("Unsqueeze", ["probs", "one_axis"], ["probs_un"], name="unsqueeze"),
        helper.make_node("Squeeze", ["probs_un", "one_axis"], ["probs_sq"], name="squeeze"),
    ]


def matmul_chain(depth: int) -> onnx.ModelProto:
    """x[64,256] through `depth` MatMuls by one 256x256 weight: work grows with depth."""
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(0, 0.05, (256, 256)).astype(np.float32), "w"
    )
    names = ["x", *(f"h{i}" for i in range(depth))]
    nodes = [
        helper.make_node("MatMul", [a, "w"], [b])
        for a, b in zip(names[:-1], names[1:], strict=True)
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 256])],
        [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [64, 256])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def context(
    model: onnx.ModelProto,
    tmp: Path,
    feeds: list[dict[str, np.ndarray]] | None = None,
    *,
    target: str | None = "cpu",
    source: str = "user",
    **kw: Any,
) -> PassContext:
    """A PassContext as the DAG builds it, with `feeds` as calibration data."""
    data = list(feeds or [])
    return PassContext(
        contract=extract_contract(model),
        workdir=tmp,
        target=target,
        calibration=lambda: data,
        calibration_source=source,
        **kw,
    )


def run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs on ONNX Runtime CPU with its default (all) optimizations, as serving runs it."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f), strict=True)) for f in feeds]


def parity(
    a: onnx.ModelProto, b: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]
) -> dict[str, OutputParity]:
    """compiler.core.parity metrics of b's outputs against a's, per output."""
    from compiler.core.parity import output_metrics

    ra, rb = run(a, feeds), run(b, feeds)
    return {k: output_metrics([o[k] for o in rb], [o[k] for o in ra]) for k in ra[0]}


def broadcast_constant() -> onnx.ModelProto:
    """x + Expand(0.5, [1, 32, 128, 128]) -> a 1x1 Conv: 2 MiB once the Expand is folded,
    from a model of 5 KiB."""
    rng = np.random.default_rng(2)
    shape = [1, 32, 128, 128]
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["c", "shape"], ["big"]),
            helper.make_node("Add", ["x", "big"], ["a"]),
            helper.make_node("Conv", ["a", "w"], ["y"]),
            helper.make_node("Mul", ["w", "two"], ["w2"]),  # a fold that stays
            helper.make_node("Conv", ["a", "w2"], ["z"]),
        ],
        "broadcast",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, shape),
        ],
        [
            numpy_helper.from_array(np.array([0.5], np.float32), "c"),
            numpy_helper.from_array(np.array(shape, np.int64), "shape"),
            numpy_helper.from_array(rng.normal(0, 0.1, (32, 32, 1, 1)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
