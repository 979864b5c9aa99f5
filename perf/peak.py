"""The machine's limit, measured once per run: the best fp32 and int8 matrix-product rate.

fp32: numpy's BLAS sgemm, ONNX Runtime MatMul and OpenVINO MatMul. int8: ONNX Runtime
MatMulInteger (u8 x s8 -> s32, the x86 VPMADDUBSW/VNNI/AMX kernels) and OpenVINO running a
QDQ MatMul as an int8 FullyConnected. bf16, where the CPU has it natively (AVX512_BF16 or
AMX-BF16, its ISA class's traits): OpenVINO's MatMul at inference precision bf16, the kernel
a bf16 artifact runs; on an AMX host it is several times the fp32 rate, so a bf16 artifact's
fraction of peak is taken against it, never against fp32 (`peak_for`). Each kernel runs
`repeats` times on square n x n inputs, with the runtime's default threads and with one; its
rate is 2 n^3 / the fastest run (the limit is what the hardware can do, so the least
disturbed run counts), the median beside it. A measured rate is a lower bound of the
machine's: an AMX host's convolutions ran at 121 % of its bf16 MatMul rate (ResNet-18,
2026-12-02).

One round can under-read on a shared host: on a 2-vCPU AVX2 EPYC the int8 probe read 258
GOP/s in one run and 371 in another the same day, and a ResNet-18 int8 artifact then came
to 130 % of "peak" (2026-12-03). So the benchmarks measure a second round after the models
(`remeasure_peak`): the peak is each kernel's fastest run over both rounds, both rounds'
figures are kept (`rounds`: how far they differ is the host's own drift over the run), and
the fractions of peak are taken again against it (`refresh_fractions`); a fraction still
over 1 says the probe under-read (`over_peak`), never that the model beat the hardware.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "fraction_of_peak",
    "measure_peak",
    "over_peak",
    "peak_for",
    "peak_rounds",
    "refresh_fractions",
    "remeasure_peak",
]


def _time(fn: Callable[[], Any], repeats: int) -> list[float]:
    fn()
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _matmul_model(n: int, int8: bool, qdq: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    if int8:  # MatMulInteger: A u8 [n,n] (input), B s8 [n,n] (weight) -> s32
        b = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "b")
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        a_t, y_t = TensorProto.UINT8, TensorProto.INT32
        nodes, inits = [node], [b]
    elif qdq:  # fp32 in/out, QDQ around a MatMul: OpenVINO runs it as int8
        w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "wq")
        consts = [
            numpy_helper.from_array(np.array(0.02, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.uint8), "zu"),
            numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
            numpy_helper.from_array(np.array(0, np.int8), "zs"),
        ]
        nodes = [
            helper.make_node("QuantizeLinear", ["a", "s", "zu"], ["aq"]),
            helper.make_node("DequantizeLinear", ["aq", "s", "zu"], ["adq"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "zs"], ["wdq"]),
            helper.make_node("MatMul", ["adq", "wdq"], ["y"]),
        ]
        a_t, y_t, inits = TensorProto.FLOAT, TensorProto.FLOAT, [w, *consts]
    else:
        b = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "b")
        nodes, inits = [helper.make_node("MatMul", ["a", "b"], ["y"])], [b]
        a_t, y_t = TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "peak",
        [helper.make_tensor_value_info("a", a_t, [n, n])],
        [helper.make_tensor_value_info("y", y_t, [n, n])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _ort(model: onnx.ModelProto, threads: int = 0) -> Callable[[np.ndarray], Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return lambda a: sess.run(None, {"a": a})


def _openvino(
    model: onnx.ModelProto, threads: int = 0, precision: str = "f32"
) -> Callable[[np.ndarray], Any]:
    from targets.openvino.runtime import import_openvino

    core = import_openvino().Core()
    cfg: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "INFERENCE_PRECISION_HINT": precision,
    }
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", cfg)
    req = compiled.create_infer_request()
    return lambda a: req.infer({0: a})


def _bind(fn: Callable[[np.ndarray], Any], a: np.ndarray) -> Callable[[], Any]:
    return lambda: fn(a)


def _native_bf16() -> bool:
    from compiler.core.host import probe_host
    from compiler.core.isa import traits

    return traits(probe_host().isa_class).bf16


def peak_for(precision: str, peak: dict[str, Any]) -> str:
    """The peak a `precision` artifact is measured against: its own where this run measured
    one (int8, bf16), else fp32 (fp16 and bf16 on a host without native bf16)."""
    return precision if precision in ("int8", "bf16") and precision in peak else "fp32"


def _kernels(n: int) -> dict[str, tuple[str, Callable[[], Any]]]:
    """name -> (precision, zero-argument call). ONNX Runtime and OpenVINO run with their
    default threads and with one thread: on a shared host a single thread can be the faster."""
    rng = np.random.default_rng(1)
    a32 = rng.standard_normal((n, n)).astype(np.float32)
    b32 = rng.standard_normal((n, n)).astype(np.float32)
    a8 = rng.integers(0, 256, (n, n), dtype=np.uint8)
    kernels: dict[str, tuple[str, Callable[[], Any]]] = {"numpy sgemm": ("fp32", lambda: a32 @ b32)}
    for threads, tag in ((0, ""), (1, ", 1 thread")):
        ort32, ort8 = _ort(_matmul_model(n, False), threads), _ort(_matmul_model(n, True), threads)
        kernels[f"onnxruntime MatMul fp32{tag}"] = ("fp32", _bind(ort32, a32))
        kernels[f"onnxruntime MatMulInteger u8s8{tag}"] = ("int8", _bind(ort8, a8))
        try:
            ov32 = _openvino(_matmul_model(n, False), threads)
            ov8 = _openvino(_matmul_model(n, False, True), threads)
        except ImportError:
            continue
        kernels[f"openvino MatMul fp32{tag}"] = ("fp32", _bind(ov32, a32))
        kernels[f"openvino int8 MatMul (QDQ){tag}"] = ("int8", _bind(ov8, a32))
        if _native_bf16():
            ov16 = _openvino(_matmul_model(n, False), threads, "bf16")
            kernels[f"openvino MatMul bf16{tag}"] = ("bf16", _bind(ov16, a32))
    return kernels


def _summarise(kernels: dict[str, Any], n: int) -> dict[str, dict[str, Any]]:
    """{precision: {"gflops", "kernel"}}: each precision's fastest kernel over its runs."""
    flop = 2.0 * n**3
    best: dict[str, dict[str, Any]] = {}
    for name, rec in kernels.items():
        times = rec["seconds"]
        rec["best_gflops"] = flop / min(times) / 1e9
        rec["median_gflops"] = flop / float(np.median(times)) / 1e9
        if rec["precision"] not in best or rec["best_gflops"] > best[rec["precision"]]["gflops"]:
            best[rec["precision"]] = {"gflops": rec["best_gflops"], "kernel": name}
    return best


def _round(n: int, repeats: int) -> dict[str, Any]:
    return {
        name: {"precision": precision, "n": n, "seconds": _time(fn, repeats)}
        for name, (precision, fn) in _kernels(n).items()
    }


def measure_peak(n: int = 1024, repeats: int = 15) -> dict[str, Any]:
    """{"fp32": {...best...}, "int8": {...}, ["bf16": {...},] "kernels": {name: {...}},
    "rounds": [{precision: GFLOP/s}]}, rates in GFLOP/s (GOP/s); "bf16" only where the host
    runs it natively."""
    kernels = _round(n, repeats)
    best = _summarise(kernels, n)
    return {
        **best,
        "kernels": kernels,
        "rounds": [{k: v["gflops"] for k, v in best.items()}],
        "n": n,
        "repeats": repeats,
        "method": f"square {n}x{n} matrix products, {repeats} timed runs each after 2 "
        "warm-up runs, default threads and 1 thread; rate = 2n^3 / fastest run",
    }


def remeasure_peak(peak: dict[str, Any]) -> dict[str, Any]:
    """`peak` with a further round of the same kernels: each kernel's runs are both rounds'
    and the peak is the fastest over them; `rounds` gains this round's figures."""
    n, repeats = peak["n"], peak["repeats"]
    again = _round(n, repeats)
    kernels = {k: dict(v) for k, v in peak["kernels"].items()}
    for name, rec in again.items():
        if name in kernels:
            kernels[name]["seconds"] = [*kernels[name]["seconds"], *rec["seconds"]]
        else:
            kernels[name] = rec
    this = _summarise(again, n)
    best = _summarise(kernels, n)
    rounds = [*peak["rounds"], {k: v["gflops"] for k, v in this.items()}]
    method = peak["method"].split(" (")[0] + f" ({len(rounds)} rounds: before and after the models)"
    return {**peak, **best, "kernels": kernels, "rounds": rounds, "method": method}


def fraction_of_peak(achieved_gflops: float, peak_used: str, peak: dict[str, Any]) -> float:
    return achieved_gflops / peak[peak_used]["gflops"]


def over_peak(fraction: float | None) -> bool:
    """A fraction over 1: the peak probe under-read (the host was busier while it ran)."""
    return fraction is not None and fraction > 1.0


def refresh_fractions(rows: list[dict[str, Any]], peak: dict[str, Any]) -> None:
    """Take each row's `fraction_of_peak` again from its `achieved_gflops` and `peak_used`
    against `peak` (after remeasure_peak)."""
    for row in rows:
        if row.get("achieved_gflops") is not None and row.get("peak_used") in peak:
            row["fraction_of_peak"] = fraction_of_peak(
                row["achieved_gflops"], row["peak_used"], peak
            )


def peak_rounds(peak: dict[str, Any]) -> str:
    """' Best of each round (before / after the models): fp32 145 / 133 GFLOP/s, int8 265 /
    238 GOP/s.' (empty for one round): each precision's best in each round."""
    rounds = peak.get("rounds", [])
    if len(rounds) < 2:
        return ""
    units = {"fp32": "GFLOP/s", "int8": "GOP/s", "bf16": "GFLOP/s"}
    parts = [
        f"{p} {' / '.join(f'{r[p]:.0f}' for r in rounds if p in r)} {units[p]}"
        for p in units
        if p in rounds[0]
    ]
    return f" Best of each round (before / after the models): {', '.join(parts)}."
