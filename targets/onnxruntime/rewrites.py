"""Exact rewrites of ops that ONNX Runtime's CPU kernels run slowly, applied to the model an ONNX
Runtime artifact loads (never to the reference, which is the normalized model as it is).

PRelu with constant slopes becomes Mul and Max (every slope <= 1: prelu(x) = max(x, s*x)), Mul
and Min (every slope >= 1: min(x, s*x)), or Relu(x) + s*Min(x, 0) where slopes lie on both
sides of 1. Each form computes the same float operations as PRelu (x, or x*s), so the outputs
hold the same values (a zero's sign aside). Why: ONNX Runtime's PRelu kernel is not one its
NCHWc layout transformer handles, so on x86 every PRelu between two convolutions costs two
layout reorders and a slow broadcast; Mul, Max, Min, Relu and Add stay in the blocked layout.
Measured by perf/ort_rewrites.py (perf/results/2026-12-02-vm-ort-prelu.md: a 2-vCPU AVX-512
host, one thread, paired interleaved blocks): mediapipe's face landmark model as tf2onnx
converts it (23 PRelu between 45 Conv) 2.69x [2.57-2.75] faster, iris landmark (53) 2.30x, palm
detection (26, slopes on both sides of 1) 1.60x, a synthetic 8-block PRelu CNN 2.82x. A static
int8 QDQ model keeps PRelu in float between DequantizeLinear and QuantizeLinear (ONNX Runtime's
quantizer does not quantize it) and gains as well. OpenVINO fuses PRelu into its convolutions
itself: its artifacts keep the op.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.core.names import free_name

__all__ = ["rewrite_for_ort", "rewrite_prelu"]


def _names(graph: onnx.GraphProto) -> Iterator[str]:
    yield from (i.name for i in graph.input)
    yield from (t.name for t in graph.initializer)
    for node in graph.node:
        yield node.name
        yield from node.output


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes (external data is not read: a
    slope kept outside the model is left alone)."""
    found = {t.name: numpy_helper.to_array(t) for t in graph.initializer if not t.external_data}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value" and not attr.t.external_data:
                found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def rewrite_prelu(graph: onnx.GraphProto) -> int:
    """Rewrites the graph's PRelu nodes with constant, finite slopes in place (the module's
    docstring says into what); returns how many."""
    constants = _constants(graph)
    taken = set(_names(graph))

    def fresh(base: str) -> str:
        return free_name(base, taken)

    nodes: list[onnx.NodeProto] = []
    zeros: dict[int, str] = {}  # one 0 scalar per element type
    count = 0
    for node in graph.node:
        slope = constants.get(node.input[1]) if node.op_type == "PRelu" else None
        if slope is None or slope.size == 0 or not np.all(np.isfinite(slope)):
            nodes.append(node)
            continue
        count += 1
        x, s, (y,) = node.input[0], node.input[1], node.output
        base = node.name or y
        scaled = fresh(f"{y}/prelu_scaled")
        if np.all(slope <= 1) or np.all(slope >= 1):
            pick = "Max" if np.all(slope <= 1) else "Min"
            nodes += [
                helper.make_node("Mul", [x, s], [scaled], fresh(f"{base}/mul")),
                helper.make_node(pick, [x, scaled], [y], fresh(f"{base}/{pick.lower()}")),
            ]
            continue
        dtype = helper.np_dtype_to_tensor_dtype(slope.dtype)
        if dtype not in zeros:
            zeros[dtype] = fresh("prelu_zero")
            graph.initializer.append(
                numpy_helper.from_array(np.zeros((), slope.dtype), zeros[dtype])
            )
        positive, negative = fresh(f"{y}/prelu_pos"), fresh(f"{y}/prelu_neg")
        nodes += [
            helper.make_node("Relu", [x], [positive], fresh(f"{base}/relu")),
            helper.make_node("Min", [x, zeros[dtype]], [negative], fresh(f"{base}/min")),
            helper.make_node("Mul", [negative, s], [scaled], fresh(f"{base}/mul")),
            helper.make_node("Add", [positive, scaled], [y], fresh(f"{base}/add")),
        ]
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _mentions(path: Path, token: bytes) -> bool:
    """Whether the file holds `token` anywhere (an op type is stored as its plain name)."""
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
        return view.find(token) >= 0


def rewrite_for_ort(source: Path, dest: Path) -> list[str]:
    """Writes the model at `source` to `dest` with the rewrites applied, where any applies
    (its external data files are the caller's to place beside it: their names are kept);
    returns what was done, for the artifact's notes ([] and nothing written where nothing
    applies)."""
    if not _mentions(source, b"PRelu"):
        return []  # the common case, without parsing the model
    model = onnx.load(source, load_external_data=False)
    count = rewrite_prelu(model.graph)
    if not count:
        return []
    onnx.save(model, dest)
    return [
        f"{count} PRelu rewritten as Mul and Max/Min (exact) for ONNX Runtime's CPU kernels "
        "(targets/onnxruntime/rewrites.py)"
    ]
