"""Tiny models built in code for the backend tests (onnx.helper), their data, the fp32 ONNX
Runtime reference, and a build request per backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.core.contract import Contract
from compiler.pipeline.interface import extract_contract
from targets.base import BackendOptions, BuildRequest, BuildResult
from targets.onnxruntime.runtime import session
from targets.openvino.backend import OpenVinoBackend, OpenVinoOptions
from targets.runner import open_runner
from tests.models import tiny_mlp

__all__ = [
    "Feeds",
    "attention_block",
    "build_openvino",
    "clip_net",
    "conv_net",
    "lstm_net",
    "max_abs",
    "offset_diff_net",
    "offset_images",
    "passthrough_net",
    "qdq_mlp",
    "qdq_model",
    "qoperator_model",
    "reference",
    "request",
    "run_all",
    "save",
    "smooth_images",
    "within_fp32",
]

Feeds = dict[str, np.ndarray]


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _init(
    rng: np.random.Generator, name: str, std: float, shape: tuple[int, ...]
) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name)


def conv_net(
    seed: int = 0, classes: int = 4, size: int = 32, batch: str | int = "N"
) -> onnx.ModelProto:
    """Conv, Relu, Conv (stride 2), Relu, GAP, MatMul, Softmax: x[N,3,size,size] -> y[N,classes]."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "w1", 0.4, (8, 3, 3, 3)),
        _init(rng, "b1", 0.1, (8,)),
        _init(rng, "w2", 0.3, (16, 8, 3, 3)),
        _init(rng, "b2", 0.1, (16,)),
        _init(rng, "w3", 1.0, (16, classes)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv2"
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w3"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        inits,
    )
    return _model(graph)


def passthrough_net(seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> MatMul -> Softmax -> p[N,4], and the input `x` itself and a constant
    [4] as outputs too (exporters write both: an input passed through, a constant output)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "w", 1.0, (16, 4)),
        numpy_helper.from_array(np.arange(4, dtype=np.float32), "const_out"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "passthrough",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16]),
            helper.make_tensor_value_info("const_out", TensorProto.FLOAT, [4]),
        ],
        inits,
    )
    return _model(graph)


def clip_net(seed: int = 0, classes: int = 5) -> onnx.ModelProto:
    """Conv, Clip (ReLU6, scalar bounds), HardSigmoid, GAP, MatMul, Softmax; x[N,3,16,16]."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "w1", 0.4, (8, 3, 3, 3)),
        _init(rng, "b1", 0.1, (8,)),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        _init(rng, "w2", 1.0, (8, classes)),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="relu6"),
        helper.make_node("HardSigmoid", ["r"], ["h"], name="hsig"),
        helper.make_node("Mul", ["r", "h"], ["m"], name="mul"),
        helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w2"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes,
        "clip_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    return _model(graph)


def attention_block(seed: int = 1, seq: int = 16, dim: int = 32) -> onnx.ModelProto:
    """One self-attention block: Q/K/V projections, MatMul-Softmax-MatMul, output projection."""
    rng = np.random.default_rng(seed)
    scale = numpy_helper.from_array(np.array(dim**-0.5, dtype=np.float32), "scale")
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Mul", ["s", "scale"], ["ss"], name="scale_scores"),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["a"], name="attend"),
        helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"),
    ]
    weights = [_init(rng, n, dim**-0.5, (dim, dim)) for n in ("wq", "wk", "wv", "wo")]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", seq, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", seq, dim])],
        [*weights, scale],
    )
    return _model(graph)


def lstm_net(hidden: int = 2) -> onnx.ModelProto:
    """One LSTM node (which TVM's ONNX frontend cannot import)."""
    rng = np.random.default_rng(3)
    inits = [
        _init(rng, "W", 1.0, (1, 4 * hidden, 3)),
        _init(rng, "R", 1.0, (1, 4 * hidden, hidden)),
    ]
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=hidden, name="lstm_1")
    graph = helper.make_graph(
        [node],
        "lstm_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 1, 1, hidden])],
        inits,
    )
    return _model(graph)


def offset_diff_net(seed: int = 0) -> onnx.ModelProto:
    """A net bf16 cannot run throughout: x[1,1,16,17] (raw counts near 1000, as a sensor's)
    -> Conv "diff" (neighbour differences, 1x2) -> Conv 3x3 -> Relu -> Conv 3x3 -> y. bf16
    keeps 8 significant bits, so it rounds the input to steps of 4-8 and the differences
    (about 1) are lost; with "diff" in f32 the rest is fine in bf16."""
    rng = np.random.default_rng(seed)
    diff = np.zeros((4, 1, 1, 2), np.float32)
    diff[:, 0, 0, 0], diff[:, 0, 0, 1] = 1.0, -1.0
    diff *= np.arange(1, 5, dtype=np.float32)[:, None, None, None]
    inits = [
        numpy_helper.from_array(diff, "wd"),
        _init(rng, "w2", 0.3, (8, 4, 3, 3)),
        _init(rng, "w3", 0.3, (4, 8, 3, 3)),
    ]
    pad = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "wd"], ["d"], name="diff"),
        helper.make_node("Conv", ["d", "w2"], ["c2"], name="conv2", **pad),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3", **pad),
    ]
    graph = helper.make_graph(
        nodes,
        "offset_diff",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        inits,
    )
    return _model(graph)


def offset_images(n: int, seed: int) -> list[Feeds]:
    """Inputs of offset_diff_net: unit noise on an offset of 1000-1050."""
    rng = np.random.default_rng(seed)
    return [
        {"x": (1000 + 50 * rng.random() + rng.normal(size=(1, 1, 16, 17))).astype(np.float32)}
        for _ in range(n)
    ]


def smooth_images(n: int, seed: int, size: int = 32) -> list[Feeds]:
    """Images made of a few low-frequency waves per channel: calibration-like, not noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.zeros((1, 3, size, size), dtype=np.float32)
        for c in range(3):
            for _ in range(3):
                fx, fy, phase = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
                img[0, c] += np.sin(2 * np.pi * (fx * xx + fy * yy) + phase).astype(np.float32)
        out.append({"x": img / 3})
    return out


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def qdq_model(src: Path, calibration: list[Feeds], reduce_range: bool = False) -> Path:
    """`src` statically quantized by ONNX Runtime to a QDQ model beside it (what the quantize
    pass makes); `reduce_range`: 7-bit weights, whose int8 sums saturate on no host."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self.it, None)

    dst = src.with_name("model_qdq.onnx")
    quantize_static(
        str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, reduce_range=reduce_range
    )
    return dst


def qoperator_model(src: Path, calibration: list[Feeds], per_channel: bool = True) -> Path:
    """`src` statically quantized by ONNX Runtime in operator form (QLinearConv, QLinearMatMul,
    com.microsoft's QLinearGlobalAveragePool...), as the ONNX model zoo's int8 models are;
    7-bit weights, whose int8 sums saturate on no host."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self.it, None)

    dst = src.with_name("model_qoperator.onnx")
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QOperator,
        per_channel=per_channel,
        reduce_range=True,
    )
    return dst


def dynamic_int8_model(src: Path) -> Path:
    """`src` dynamically quantized by ONNX Runtime beside it, in operator form: its Conv
    nodes become ConvInteger after DynamicQuantizeLinear (an already-quantized source as
    ONNX Runtime's quantize_dynamic writes it)."""
    from onnxruntime.quantization import quantize_dynamic

    dst = src.with_name("model_dynamic_int8.onnx")
    quantize_dynamic(str(src), str(dst), op_types_to_quantize=["Conv"])
    return dst


def reference(path: Path, feeds: list[Feeds]) -> list[Feeds]:
    """Outputs of the fp32 model on ONNX Runtime CPU (the packages' reference)."""
    sess = session(path, threads=1)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f), strict=True)) for f in feeds]


def request(
    model_path: Path,
    options: BackendOptions,
    workdir: Path,
    target: str = "cpu",
    precision: str = "fp32",
    cache_root: Path | None = None,
) -> tuple[BuildRequest, Contract]:
    """A build request for `model_path` (its contract read off the model)."""
    contract = extract_contract(onnx.load(str(model_path)))
    req = BuildRequest(
        target=target,
        variant=f"{options.backend}-{precision}",
        precision=precision,
        options=options,
        contract=contract,
        workdir=workdir,
        cache_root=cache_root,
    )
    return req, contract


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def within_fp32(got: np.ndarray, ref: np.ndarray) -> bool:
    """compile-pkg's fp32 gate: max_abs <= 1e-4 + 1e-3 * max|ref|."""
    return max_abs(got, ref) <= 1e-4 + 1e-3 * float(np.max(np.abs(ref)))


def build_openvino(
    path: Path, tmp: Path, precision: str = "fp32", target: str = "cpu", **options: object
) -> tuple[BuildResult, Path, Contract]:
    """An OpenVINO artifact of `path` in a new folder under `tmp`."""
    out = tmp / f"{target}-{precision}-{len(list(tmp.iterdir()))}"
    out.mkdir()
    opts = OpenVinoOptions.model_validate(options)
    req, contract = request(path, opts, tmp, target, precision)
    return OpenVinoBackend().build(path, req, out), out, contract


def run_all(result: BuildResult, out: Path, contract: Contract, feeds: list[Feeds]) -> list[Feeds]:
    """Every feed through the runner serving uses (contract-checked)."""
    backend = result.runtime.backend
    with open_runner(backend, out, result.runtime, contract) as runner:
        return [runner.run(f) for f in feeds]


def qdq_mlp() -> onnx.ModelProto:
    """tests.models.tiny_mlp with its input quantized/dequantized (scale 0.05, zero point 0)."""
    m = tiny_mlp()
    g = m.graph
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array(0.05, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "zp"),
        ]
    )
    q = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="q")
    dq = helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xdq"], name="dq")
    g.node[0].input[0] = "xdq"
    nodes = [q, dq, *g.node]
    del g.node[:]
    g.node.extend(nodes)
    return m


def resize_net(
    scales: list[float], antialias: int = 1, mode: str = "cubic", **attrs: object
) -> onnx.ModelProto:
    """x [N, 3, 32, 32] through one opset-18 Resize by constant `scales`."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3, "h", "w"])
    s = onnx.numpy_helper.from_array(np.array(scales, np.float32), "scales")
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], name="shrink", mode=mode, antialias=antialias, **attrs
    )
    graph = helper.make_graph([node], "resize", [x], [y], [s])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
