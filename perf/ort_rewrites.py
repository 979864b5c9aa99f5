"""ONNX Runtime's exact rewrites (targets/onnxruntime/rewrites.py), timed: each model as it is
and as an ONNX Runtime artifact loads it, in one process, in paired interleaved blocks, with
the speedup's 95 % interval (compiler/core/latency.py) and the largest output difference.

    python perf/ort_rewrites.py MODEL.onnx [MODEL.onnx ...] [--threads 0,1] [--out STEM]

Symbolic input dims are taken as 1; inputs are standard normal (floats) or zeros (integers):
latency does not depend on the values of these models. It times a PRelu network built here
first (`prelu_cnn`: 8 Conv + PRelu blocks on 1x3x192x192), so a run needs no download. `--out STEM` writes STEM.json and STEM.md with the host's CPU and ISA flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compiler.core.host import probe_host  # noqa: E402
from compiler.core.latency import speedup_interval  # noqa: E402
from targets.onnxruntime.rewrites import rewrite_prelu  # noqa: E402

__all__ = ["main", "prelu_cnn"]

_BLOCKS, _RUNS, _WARMUP = 15, 15, 3


def prelu_cnn(blocks: int = 8, channels: int = 32, size: int = 192) -> onnx.ModelProto:
    """Conv (3x3) + per-channel PRelu blocks, every other one strided: the shape of mediapipe's
    and MTCNN's face networks, random weights."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for i in range(blocks):
        w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (channels, cin, 3, 3)).astype(np.float32)
        slope = rng.uniform(0.0, 0.5, (channels, 1, 1)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(slope, f"s{i}")]
        stride = 2 if i % 2 else 1
        nodes += [
            helper.make_node(
                "Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[stride] * 2
            ),
            helper.make_node("PRelu", [f"c{i}", f"s{i}"], [f"p{i}"]),
        ]
        prev, cin = f"p{i}", channels
    graph = helper.make_graph(
        nodes,
        "prelu_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _feed(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    init = {t.name for t in model.graph.initializer}
    feed = {}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(t.elem_type)
        value = rng.normal(size=shape) if dtype.kind == "f" else np.zeros(shape)
        feed[vi.name] = value.astype(dtype)
    return feed


def _session(model: onnx.ModelProto, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])


def _block(sess: Any, feed: dict[str, np.ndarray]) -> list[float]:
    for _ in range(_WARMUP):
        sess.run(None, feed)
    times = []
    for _ in range(_RUNS):
        start = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - start)
    return times


def time_model(name: str, model: onnx.ModelProto, threads: int) -> dict[str, Any]:
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    count = rewrite_prelu(rewritten.graph)
    feed = _feed(model)
    before, after = _session(model, threads), _session(rewritten, threads)
    diff = max(
        float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
        for a, b in zip(before.run(None, feed), after.run(None, feed), strict=True)
    )
    ref_blocks: list[list[float]] = []
    new_blocks: list[list[float]] = []
    for i in range(_BLOCKS):  # alternate which goes first
        pair = [(before, ref_blocks), (after, new_blocks)]
        for sess, blocks in pair if i % 2 == 0 else reversed(pair):
            blocks.append(_block(sess, feed))
    s = speedup_interval(ref_blocks, new_blocks, 0.95)
    return {
        "model": name,
        "prelu_rewritten": count,
        "threads": threads or "default",
        "before_ms": round(float(np.median(ref_blocks)) * 1e3, 3),
        "after_ms": round(float(np.median(new_blocks)) * 1e3, 3),
        "speedup": round(s.estimate, 3),
        "interval": [round(s.low, 3), round(s.high, 3)],
        "confidence": s.confidence,
        "pairs": s.pairs,
        "max_abs_diff": diff,
    }


def _markdown(doc: dict[str, Any]) -> str:
    host = doc["host"]
    lines = [
        "# ONNX Runtime's exact rewrites (PRelu as Mul and Max/Min): before and after, one run",
        "",
        f"Host: {host['arch']} {host['cpu_model']} x{host['cpu_count']}; ISA class "
        f"{host['isa_class']}; flags {', '.join(host['isa'])}. onnxruntime {doc['onnxruntime']}. "
        f"Command: `{doc['command']}`. {_BLOCKS} paired blocks of {_RUNS} runs each, "
        "alternating which goes first; speedup = median of the blocks' before/after ratios "
        "with its 95 % interval.",
        "",
        "| model | PRelu rewritten | threads | before ms | after ms | speedup [95 %] | max diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        low, high = r["interval"]
        lines.append(
            f"| {r['model']} | {r['prelu_rewritten']} | {r['threads']} | {r['before_ms']} | "
            f"{r['after_ms']} | {r['speedup']:.2f}x [{low:.2f}-{high:.2f}] | "
            f"{r['max_abs_diff']:.3g} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", type=Path)
    parser.add_argument("--threads", default="0,1", help="comma-separated; 0: ORT's default")
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    models = [("prelu_cnn", prelu_cnn()), *((p.stem, onnx.load(p)) for p in args.models)]
    results = []
    for name, model in models:
        for threads in (int(t) for t in args.threads.split(",")):
            results.append(time_model(name, model, threads))
            print(json.dumps(results[-1]), flush=True)
    doc = {
        "command": "python perf/ort_rewrites.py " + " ".join(argv),
        "host": probe_host().model_dump(mode="json"),
        "onnxruntime": ort.__version__,
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
