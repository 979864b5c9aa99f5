#!/usr/bin/env python3
"""Differential sweep: single-op ONNX models run on ONNX Runtime (the reference), OpenVINO
(CPU, f32) and TVM (Relax, llvm), printing each backend's largest difference from ONNX
Runtime, or its error. Rerun it when OpenVINO or TVM is upgraded: what it finds different
with no error is what targets/frontend_gaps.py and targets/openvino/rewrites.py handle, and
a gap that closed shows up there as a test that fails (tests/targets/test_frontend_gaps.py).

    python scripts/frontend_sweep.py [--only NAME ...] [--workdir DIR]

Where ONNX Runtime and a backend differ, ONNX's reference implementation
(onnx.reference.ReferenceEvaluator) is a third opinion: `ref` is ONNX Runtime's difference
from it. It is not always right either: onnx 1.23's computes Softmax, LogSoftmax and Hardmax
before opset 13 by opset 13's definition, and RNN's clip otherwise; where the two disagree,
the op's definition decides, worked by hand (numpy), as for the findings below. ONNX Runtime
warns itself that its RoiAlign max mode differs (not in the cases here). Two gaps need feeds
or shapes these single-op cases do not make, and have their tests only: IsInf's one-sided
detection (TVM: random normal feeds hold no infinity) and sequence_lens on a dynamic input
(OpenVINO: the cases are static).
Findings of 2026-12-05 (OpenVINO 2026.4.1, apache-tvm 0.27, ONNX Runtime 1.32): see
docs/decisions.md.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F, I64 = TensorProto.FLOAT, TensorProto.INT64
X4 = ("x", F, [1, 3, 8, 8])
_rng = np.random.default_rng(0)


def _randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (_rng.normal(size=shape) * scale).astype(np.float32)


def _c(name: str, value: Any, dtype: Any = None) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[tuple[str, int, list[int]]],
    outputs: list[tuple[str, int]],
    inits: list[onnx.TensorProto],
    opset: int,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "sweep",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _one(op: str, opset: int, *inits: onnx.TensorProto, inputs=None, outs=(("y", F),), **attrs):  # type: ignore[no-untyped-def]
    """x [1, 3, 8, 8] (or `inputs`) through one `op` whose other inputs are `inits`."""
    names = [i.name for i in inits]
    ins = inputs or [X4]
    node = helper.make_node(op, [ins[0][0], *names], [o for o, _ in outs], **attrs)
    return _model([node], ins, list(outs), list(inits), opset)


def _resize(opset: int, scales=None, sizes=None, roi=None, **attrs):  # type: ignore[no-untyped-def]
    inits, names = [], ["x", "", ""]
    if roi is not None:
        inits.append(_c("roi", roi, np.float32))
        names[1] = "roi"
    if scales is not None:
        inits.append(_c("scales", scales, np.float32))
        names[2] = "scales"
    if sizes is not None:
        inits.append(_c("sizes", sizes, np.int64))
        names.append("sizes")
    return _model(
        [helper.make_node("Resize", names, ["y"], **attrs)], [X4], [("y", F)], inits, opset
    )


def _rnn(op: str, gates: int, **attrs):  # type: ignore[no-untyped-def]
    hidden, dirs = 5, 2 if attrs.get("direction") == "bidirectional" else 1
    inits = [
        _c("W", _randn(dirs, gates * hidden, 4, scale=0.3)),
        _c("R", _randn(dirs, gates * hidden, hidden, scale=0.3)),
    ]
    names = ["x", "W", "R"]
    if attrs.pop("peephole", False):
        inits.append(_c("P", _randn(dirs, 3 * hidden, scale=0.3)))
        names += ["", "", "", "", "P"]
    node = helper.make_node(op, names, ["y"], hidden_size=hidden, **attrs)
    return _model([node], [("x", F, [7, 2, 4])], [("y", F)], inits, 14)


def cases() -> dict[str, Callable[[], onnx.ModelProto]]:
    pads = _c("pads", [0, 0, 1, 2, 0, 0, 2, 1], np.int64)
    grid = _c("grid", _rng.uniform(-1.2, 1.2, (1, 5, 6, 2)).astype(np.float32))
    rois = [_c("rois", [[1, 2, 10, 12], [0, 0, 15, 15]], np.float32), _c("bi", [0, 0], np.int64)]
    return {
        "resize_linear_half_pixel_symmetric": lambda: _resize(19, [1, 1, 1.7, 0.6], mode="linear", coordinate_transformation_mode="half_pixel_symmetric"),
        "resize_cubic_exclude_outside": lambda: _resize(13, [1, 1, 2, 2], mode="cubic", exclude_outside=1, cubic_coeff_a=-0.5),
        "resize_cubic_antialias_down": lambda: _resize(18, [1, 1, 0.5, 0.5], mode="cubic", antialias=1),
        "resize_nearest_ceil": lambda: _resize(13, [1, 1, 1.5, 1.5], mode="nearest", nearest_mode="ceil", coordinate_transformation_mode="asymmetric"),
        "resize_linear_off_grid": lambda: _resize(13, [1, 1, 0.55, 0.8], mode="linear"),
        "resize_linear_align_corners": lambda: _resize(13, [1, 1, 2, 2], mode="linear", coordinate_transformation_mode="align_corners"),
        "resize_tf_crop_and_resize": lambda: _resize(13, roi=[0, 0, 0.2, 0.3, 1, 1, 0.8, 0.9], sizes=[1, 3, 5, 5], mode="linear", coordinate_transformation_mode="tf_crop_and_resize"),
        "resize_keep_aspect_not_larger": lambda: _resize(18, sizes=[1, 3, 16, 12], mode="nearest", keep_aspect_ratio_policy="not_larger"),
        "pad_reflect_axes": lambda: _model([helper.make_node("Pad", ["x", "p", "", "ax"], ["y"], mode="reflect")], [X4], [("y", F)], [_c("p", [1, 2, 1, 2], np.int64), _c("ax", [2, 3], np.int64)], 18),
        "pad_edge": lambda: _one("Pad", 18, pads, mode="edge"),
        "pad_wrap": lambda: _one("Pad", 19, pads, mode="wrap"),
        "gelu_tanh": lambda: _one("Gelu", 20, approximate="tanh"),
        "mod_fmod": lambda: _one("Mod", 13, _c("d", 0.7, np.float32), fmod=1),
        "softmax_opset11_axis1": lambda: _one("Softmax", 11, axis=1),
        "logsoftmax_opset11_axis1": lambda: _one("LogSoftmax", 11, axis=1),
        "hardmax_opset11_axis1": lambda: _one("Hardmax", 11, axis=1),
        "lrn_bias_1_5": lambda: _one("LRN", 13, size=3, bias=1.5),
        "lrn_bias_2": lambda: _one("LRN", 13, size=3, bias=2.0),
        "layernorm_axis1": lambda: _one("LayerNormalization", 17, _c("g", _randn(3, 8, 8)), axis=1),
        "groupnorm_opset21": lambda: _one("GroupNormalization", 21, _c("g", _randn(3)), _c("b", _randn(3)), num_groups=3),
        "instancenorm": lambda: _one("InstanceNormalization", 6, _c("g", _randn(3)), _c("b", _randn(3))),
        "gridsample_cubic_reflection": lambda: _one("GridSample", 20, grid, mode="cubic", padding_mode="reflection"),
        "gridsample_nearest_border": lambda: _one("GridSample", 20, grid, mode="nearest", padding_mode="border", align_corners=1),
        "scatternd_add": lambda: _one("ScatterND", 18, _c("idx", [[0, 1], [0, 1], [0, 2]], np.int64), _c("upd", _randn(3, 8, 8)), reduction="add"),
        "cumsum_reverse_exclusive": lambda: _one("CumSum", 14, _c("ax", 3, np.int64), exclusive=1, reverse=1),
        "topk_smallest": lambda: _one("TopK", 11, _c("k", [3], np.int64), outs=(("v", F), ("i", I64)), axis=3, largest=0),
        "maxpool_ceil_dilations": lambda: _one("MaxPool", 12, kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 1], ceil_mode=1),
        "maxpool_indices_column_major": lambda: _one("MaxPool", 12, outs=(("y", F), ("i", I64)), kernel_shape=[2, 2], strides=[2, 2], storage_order=1),
        "avgpool_ceil_exclude_pad": lambda: _one("AveragePool", 19, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0),
        "lppool": lambda: _one("LpPool", 18, kernel_shape=[2, 2], p=3, strides=[2, 2]),
        "convtranspose_output_padding": lambda: _one("ConvTranspose", 11, _c("w", _randn(3, 2, 3, 3)), strides=[2, 2], output_padding=[1, 1], pads=[1, 1, 1, 1], dilations=[1, 2]),
        "convtranspose_output_shape": lambda: _one("ConvTranspose", 11, _c("w", _randn(3, 2, 3, 3)), strides=[2, 2], output_shape=[17, 18]),
        "conv_same_lower": lambda: _one("Conv", 11, _c("w", _randn(4, 3, 4, 4)), strides=[2, 2], auto_pad="SAME_LOWER"),
        "roialign_avg_half_pixel": lambda: _one("RoiAlign", 16, *rois, output_height=3, output_width=3, sampling_ratio=2, spatial_scale=0.5),
        "roialign_avg_output_half_pixel": lambda: _one("RoiAlign", 16, *rois, output_height=3, output_width=3, sampling_ratio=2, spatial_scale=0.5, coordinate_transformation_mode="output_half_pixel"),
        "einsum_diagonal": lambda: _one("Einsum", 12, equation="abcc->abc"),
        "trilu_lower_k": lambda: _one("Trilu", 14, _c("k", -1, np.int64), upper=0),
        "celu": lambda: _one("Celu", 12, alpha=0.7),
        "shrink": lambda: _one("Shrink", 9, bias=0.2, lambd=0.5),
        "mish": lambda: _one("Mish", 18),
        "slice_negative_steps": lambda: _one("Slice", 13, _c("st", [-1, 6], np.int64), _c("en", [-9, 0], np.int64), _c("ax", [3, 2], np.int64), _c("sp", [-2, -3], np.int64)),
        "lstm_peephole": lambda: _rnn("LSTM", 4, peephole=True),
        "lstm_bidirectional": lambda: _rnn("LSTM", 4, direction="bidirectional"),
        "gru_linear_before_reset": lambda: _rnn("GRU", 3, linear_before_reset=1),
        "rnn_clip": lambda: _rnn("RNN", 1, clip=0.5),
    }  # fmt: skip


def _feeds(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        i.name: rng.normal(size=[d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
        for i in model.graph.input
    }  # fmt: skip


def _off(got: list[np.ndarray], want: list[np.ndarray]) -> str:
    if [np.shape(g) for g in got] != [np.shape(w) for w in want]:
        return f"shape {[np.shape(g) for g in got]} vs {[np.shape(w) for w in want]}"
    diff = max(
        float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max(initial=0))
        for g, w in zip(got, want, strict=True)
    )
    return f"{diff:.2e}"


def _openvino(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    got = compiled(feeds)
    return [np.asarray(got[o]) for o in compiled.outputs]


def _tvm(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(path), shape_dict={k: list(v.shape) for k, v in feeds.items()})
    mod = relax.transform.LegalizeOps()(relax.transform.DecomposeOpsForInference()(mod))
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
    items = list(out) if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else [out]
    return [o.numpy() for o in items]


def _reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(onnx.load(path)).run(None, feeds))


def _try(
    run: Callable[[Path, dict[str, np.ndarray]], list[np.ndarray]],
    path: Path,
    feeds: dict[str, np.ndarray],
    want: list[np.ndarray],
) -> str:
    try:
        return _off(run(path, feeds), want)
    except Exception as exc:  # noqa: BLE001 - an error is an answer here
        return "error: " + " ".join(str(exc).split())[-70:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=[], help="case names")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime as ort

    work = args.workdir or Path(tempfile.mkdtemp(prefix="frontend-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| case | openvino | tvm | ref |\n|---|---|---|---|")
    for name, make in cases().items():
        if args.only and name not in args.only:
            continue
        model = make()
        path = work / f"{name}.onnx"
        onnx.save(model, path)
        feeds = _feeds(model)
        try:
            want = ort.InferenceSession(str(path)).run(None, feeds)
        except Exception as exc:  # noqa: BLE001
            print(f"| {name} | onnxruntime error: {' '.join(str(exc).split())[:70]} | | |")
            continue
        got = [_try(run, path, feeds, want) for run in (_openvino, _tvm, _reference)]
        print(f"| {name} | {' | '.join(got)} |", flush=True)


if __name__ == "__main__":
    main()
