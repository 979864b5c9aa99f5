"""fp16: weights and compute in float16, graph inputs/outputs kept float32.

Uses ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the same converter
onnxconverter-common ships), with a block-list of numerically fragile ops left in float32:
reductions and average pools (sums of many fp16 values overflow or lose precision),
Pow/Exp/Log, Resize and Range (coordinates), CumSum, and Softmax unless
`keep_softmax_fp32: false`. The pass loads its
output on ONNX Runtime CPU before returning. An already-quantized model's integer ops
(compiler/core/quantized.py) stay float32 around: their scales and DynamicQuantizeLinear's
input are float32 only. An op type ORT still rejects in float16 (a type constraint, e.g.
Celu's) is kept float32 and the model converted again, recorded in the pass's record; a model
ORT still cannot run fails here, naming the node, instead of at packaging.

**Values fp16 cannot hold stay float32** (`_hot_nodes`): the float32 model runs on a few of
the build's calibration feeds and parity samples (inputs like those served) with every
intermediate float tensor as an output; a tensor whose
largest magnitude passes FP16_SAFE (a quarter of fp16's 65504: headroom for inputs the probe
did not see) keeps its producer and its consumers in float32 (`node_block_list`). Why: a
block-listed reduction computes in float32 but the converter casts its result back to fp16
for the next op. magika's LayerNorm sums 512 squares into more than 65504: the cast makes it
inf, and the artifact's every answer was the same class on an H200 (and on TVM's CPU code,
which computes fp16 as fp16). ONNX Runtime CPU hid it: it has no fp16 Mul, computes such ops
in float32 and removes the cast pair, so the same model was correct there. Where the probe
cannot run (a model ORT cannot run with all its tensors exposed), the record says so and the
conversion goes on without it.

**An If (Loop, Scan) whose branches hold a block-listed op is kept float32 whole** where the
converted model does not load: ONNX Runtime's converter puts the Casts around a block-listed
node inside a branch into the main graph, where the tensor they read does not exist (both
silero_vad versions, openwakeword's wake-word classifiers). The node is then block-listed,
its branches read float32 copies of the outer tensors they read (the converter leaves those
as it made them: fp16 where their producer was converted), and the record names it.

bf16 is not a graph precision here: ONNX Runtime CPU has no bf16 kernels for MatMul, Conv or
Add. Ask the backend for it instead (OpenVINO's inference precision, TensorRT's BF16 flag).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from pydantic import model_validator

from compiler.core.errors import PassError
from compiler.core.graphs import defined, elem_types, nodes, subgraphs
from compiler.core.names import free_name
from compiler.core.quantized import is_quantized_op
from passes.base import (
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    half_precision,
    node_reads,
    op_histogram,
    sort_topologically,
)
from passes.ort_tools import quiet, session

__all__ = ["FP16_SAFE", "FRAGILE_OPS", "Fp16Config", "Fp16Pass"]

FRAGILE_OPS = (
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    # averages are sums: a backend that sums in the storage type overflows (TVM made
    # ppocr_det's GlobalAveragePool of a 32x32 map inf in fp16, on the H200 and on the CPU)
    "GlobalAveragePool",
    "AveragePool",
    "Pow",
    "Exp",
    "Log",
    "Resize",
    "Range",
    "CumSum",
)
_FP16_MAX = 65504.0
# a tensor the probe saw above this keeps float32 around it (4x headroom for unseen inputs)
FP16_SAFE = _FP16_MAX / 4
_PROBE_FEEDS = 4  # calibration feeds the range probe runs, and as many parity samples
_FP16_MIN_POSITIVE = 5.96e-08
_MAX_REJECTED = 8  # op types kept float32 after ONNX Runtime rejected them, before giving up


class Fp16Config(PassConfig):
    name: Literal["fp16"] = "fp16"
    precision: Literal["fp16", "bf16"] = "fp16"
    keep_io_types: bool = True
    op_block_list: tuple[str, ...] = FRAGILE_OPS
    keep_softmax_fp32: bool = True
    node_block_list: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _no_bf16_graphs(self) -> Fp16Config:
        if self.precision == "bf16":
            raise ValueError(
                "fp16 pass: precision bf16 is not supported as a graph rewrite: ONNX Runtime CPU "
                "has no bf16 kernels for MatMul/Conv/Add. Keep the graph fp32 and ask the "
                "backend for bf16 (OpenVINO inference precision, TensorRT BF16)"
            )
        return self


def _out_of_range(model: onnx.ModelProto) -> dict[str, int]:
    """Float32 weights (initializers and Constant nodes) fp16 cannot hold: the converter clamps
    them to the fp16 range."""
    too_big = too_small = 0
    constants = [
        a.t
        for n in model.graph.node
        if n.op_type == "Constant"
        for a in n.attribute
        if a.name == "value"
    ]
    for init in [*model.graph.initializer, *constants]:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        a = np.abs(numpy_helper.to_array(init))
        too_big += int((a > _FP16_MAX).sum())
        too_small += int(((a > 0) & (a < _FP16_MIN_POSITIVE)).sum())
    return {"clamped_to_fp16_max": too_big, "flushed_to_fp16_min": too_small}


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """The converter appends its Casts at the end; ONNX needs producers before consumers."""
    if sort_topologically(graph) is None:
        raise PassError("fp16: the converted graph has a cycle; report this model")


def _node_in_error(message: str) -> str:
    found = re.search(r"node with name '([^']*)'|node \(([^)]*)\)", message, re.IGNORECASE)
    return next((g for g in found.groups() if g), "") if found else ""


def _branch_holders(model: onnx.ModelProto, ops: set[str], names: set[str]) -> list[str]:
    """Main-graph nodes with subgraphs (If, Loop, Scan) whose branches hold, at any depth, an
    op of `ops` or a node of `names`. ONNX Runtime's converter puts the Casts around such a
    block-listed node into the main graph, where the tensor they read does not exist, and
    the model does not load (silero_vad's STFT Cast; openwakeword's wake-word classifiers'
    ReduceMean in an If branch). Such a node is then kept float32 whole (`_float32_reads`)."""

    def holds(node: onnx.NodeProto) -> bool:
        inner = (n for g in subgraphs(node) for n in nodes(g))
        return any(n.op_type in ops or (n.name and n.name in names) for n in inner)

    return [n.name for n in model.graph.node if holds(n)]


def _float32_reads(model: onnx.ModelProto, holders: set[str]) -> None:
    """Give the block-listed `holders`' branches float32 copies of the outer float tensors they
    read, in place: the converter keeps a block-listed node's branches float32 but leaves the
    outer tensors they read as it made them (fp16 where their producer was converted)."""
    graph = model.graph
    types = elem_types(model)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    taken = {t for n in graph.node for t in (n.name, *n.output)} | set(types)
    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.name in holders:
            renamed: dict[str, str] = {}
            for name in sorted(node_reads(node)):
                if types.get(name) in floats:
                    copy = free_name(f"{name}_fp32_for_{node.name}", taken)
                    rewritten.append(
                        onnx.helper.make_node(
                            "Cast", [name], [copy], name=copy, to=onnx.TensorProto.FLOAT
                        )
                    )
                    renamed[name] = copy
            for g in subgraphs(node):
                _rename_reads(g, renamed)
        rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)


def _rename_reads(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Reads of `renamed`'s keys in `graph` and its subgraphs read the values instead (names
    the graph makes itself shadow the outer ones and stay; a branch output that names an
    outer tensor is a read by name, left as it is)."""
    own = defined(graph)
    outer = {k: v for k, v in renamed.items() if k not in own}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in outer:
                node.input[i] = outer[name]
        for g in subgraphs(node):
            _rename_reads(g, outer)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose every node has a name (node_block_list names nodes), and whose outputs
    are all made by nodes: an output that is an initializer (a detector's anchors) is read
    through an Identity, as the float16 converter, which casts an fp16 initializer back to
    float32 under the output's name, wrote a model with that name defined twice."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constants = {t.name: t for t in out.graph.initializer}
    for i, output in enumerate(o for o in out.graph.output if o.name in constants):
        renamed = f"{output.name}__fp16_const_{i}"
        constants[output.name].name = renamed
        out.graph.node.insert(0, helper.make_node("Identity", [renamed], [output.name]))
    taken = {n.name for n in out.graph.node if n.name}
    for i, node in enumerate(out.graph.node):
        if not node.name:
            name = f"fp16_node_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    return out


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Every float32 tensor a node makes (shape inference's types), graph outputs aside."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # onnx's InferenceError and friends: no types, no probe
        return []
    outputs = {o.name for o in model.graph.output}
    made = {o for n in model.graph.node for o in n.output}
    return sorted(
        v.name
        for v in inferred.graph.value_info
        if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        and v.name in made
        and v.name not in outputs
    )


def _hot_nodes(
    model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]
) -> tuple[list[str], dict[str, Any]]:
    """The nodes that make or read a float tensor larger than FP16_SAFE on `feeds` (run on
    the float32 `model`, every node named), and what the probe found, for the record."""
    if not feeds:
        return [], {"range_probe": "not run: no calibration feeds or samples"}
    names = _float_tensors(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    try:
        sess = session(probe, optimization="disable")
        largest: dict[str, float] = {}
        for feed in feeds:
            for name, value in zip(names, sess.run(names, feed), strict=True):
                finite = np.abs(value[np.isfinite(value)]) if np.size(value) else value
                if np.size(finite):
                    largest[name] = max(largest.get(name, 0.0), float(finite.max()))
    except Exception as exc:  # onnxruntime's own error types
        why = " ".join(str(exc).split())[:200]
        return [], {"range_probe": f"not run: ONNX Runtime could not run every tensor ({why})"}
    hot = {n for n, v in largest.items() if v > FP16_SAFE}
    nodes = [n.name for n in model.graph.node if hot & {*n.input, *n.output}]
    shown = sorted(hot, key=lambda n: -largest[n])[:5]
    return nodes, {
        "range_probe": f"{len(feeds)} feeds (calibration and samples), {len(names)} tensors",
        "kept_float32_for_range": {
            "nodes": len(nodes),
            "tensors": {n: round(largest[n], 1) for n in shown},
        },
    }


def _cast_to(node: onnx.NodeProto) -> int | None:
    if node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_round_trips(model: onnx.ModelProto) -> int:
    """Remove float32 -> fp16 -> float32 Cast pairs the converter puts between two nodes it
    keeps in float32 (it casts every kept node's output to fp16 and every kept node's input to
    float32): the value would pass through fp16, where a sum fp16 cannot hold becomes inf. The
    fp32 consumers read the first Cast's input instead. Returns the pairs removed."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        # a node with branches reads the outer tensors they read, too
        for name in node_reads(node):
            readers.setdefault(name, []).append(node)
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    dropped: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    for down in graph.node:
        if _cast_to(down) != fp16 or down.output[0] in outputs:
            continue
        ups = readers.get(down.output[0], [])
        if not ups or any(_cast_to(u) != fp32 or u.output[0] in outputs for u in ups):
            continue
        dropped += [down, *ups]
        for up in ups:
            renamed[up.output[0]] = down.input[0]
    if not dropped:
        return 0
    gone = {id(n) for n in dropped}
    kept = [n for n in graph.node if id(n) not in gone]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(dropped) - len(renamed)


class Fp16Pass(Pass[Fp16Config]):
    name = "fp16"
    # 2: a quantized source's integer ops stay float32 around (an int8 source's
    # DynamicQuantizeLinear takes float32 only), and an op type ONNX Runtime cannot load in
    # float16 is kept float32 and the model converted again; 3: values fp16 cannot hold on
    # the calibration feeds and samples stay float32 (_hot_nodes), and float32 -> fp16 ->
    # float32 Cast pairs between two float32 nodes are removed (_drop_round_trips); 4: average
    # pools are block-listed (TVM sums them in fp16); 5: where the converted model does not
    # load, nodes whose branches hold block-listed ops are kept float32 whole, reading float32
    # copies of the outer tensors (_branch_holders, _float32_reads); 6: the converted model's
    # load check runs ONNX Runtime's basic optimizations, not all (a crash in its layout
    # optimizers); 7: an output that is an initializer is read through an Identity (_named),
    # one that passes an input through is left out while converting; 8: a source already in
    # fp16 is left as it is
    version = "8"
    config_cls = Fp16Config
    precision: ClassVar[str | None] = "fp16"
    uses_calibration: ClassVar[bool] = True

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def _blocked_ops(self) -> list[str]:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        extra = ["Softmax"] if self.config.keep_softmax_fp32 else []
        return sorted({*DEFAULT_OP_BLOCK_LIST, *self.config.op_block_list, *extra})

    _round_trips = 0

    def _convert(
        self, model: onnx.ModelProto, blocked: list[str], hot: list[str], holders: list[str]
    ) -> onnx.ModelProto:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        candidate = onnx.ModelProto()
        candidate.CopyFrom(model)
        with quiet("", "onnxruntime.transformers"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = convert_float_to_float16(
                candidate,
                keep_io_types=self.config.keep_io_types,
                op_block_list=blocked,
                node_block_list=sorted({*self.config.node_block_list, *hot, *holders}),
            )
        if holders:
            _float32_reads(out, set(holders))
        self._round_trips = _drop_round_trips(out)
        _sort_topologically(out.graph)
        return out

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        if half_precision(model) == "fp16":
            # converted already (ONNX Runtime's converter, keep_io_types: its casts at the
            # interface are named graph_input_cast0 ...): converting again named its new
            # casts the same, and ONNX Runtime refused the model ("two nodes with same node
            # name"), failing an fp16 BERT's TVM fp16 artifact
            why = "the source's weights are fp16 already: the model is left as it is"
            return PassResult(model=model, record={"already_fp16": why})
        model = _named(model)
        # an input passed through as an output is left out while converting: keep_io_types
        # casts it in and back out under its own name, defined twice (ONNX Runtime refused)
        inputs = {i.name for i in model.graph.input}
        passed = [(i, o) for i, o in enumerate(model.graph.output) if o.name in inputs]
        for _, o in reversed(passed):
            model.graph.output.remove(o)
        feeds = ctx.calibration()[:_PROBE_FEEDS] + ctx.validation()[:_PROBE_FEEDS]
        hot, probed = _hot_nodes(model, feeds)
        if ctx.calibration_source == "generated" and "kept_float32_for_range" in probed:
            probed["range_probe"] += " (generated: real inputs may run larger)"
        source_ops = set(op_histogram(model))
        # an already-quantized model's integer ops take float32 scales and inputs
        # (DynamicQuantizeLinear, QLinearConv's scales): they and their float inputs stay so
        blocked = sorted({*self._blocked_ops(), *filter(is_quantized_op, source_ops)})
        # op types ONNX Runtime still rejects in float16 (a type constraint, e.g. Celu's),
        # kept float32 and the model converted again
        rejected: dict[str, str] = {}
        holders: list[str] = []  # kept float32 whole for what their branches hold
        while True:
            out = self._convert(model, blocked, hot, holders)
            try:
                # basic: every node still needs a kernel for its types (what this checks);
                # the layout optimizers of `all` crashed ONNX Runtime 1.32 (SIGSEGV) on an
                # fp16 transformer encoder with a bool padding mask (AMX host, 2026-12-05)
                session(out, "basic")
                break
            except Exception as exc:  # onnxruntime's own Fail/NotImplemented types
                msg = " ".join(str(exc).split())[:400]
                node = _node_in_error(msg)
                op = next((n.op_type for n in out.graph.node if node and n.name == node), "")
                if op in source_ops and op not in blocked and len(rejected) < _MAX_REJECTED:
                    rejected[op] = msg
                    blocked = sorted({*blocked, op})
                    continue
                held = _branch_holders(model, set(blocked), {*self.config.node_block_list, *hot})
                if held and not holders:
                    holders = held
                    continue
                where = f" at node '{node}'" if node else ""
                raise PassError(
                    f"fp16: ONNX Runtime CPU cannot load the converted model{where}: {msg}; "
                    "add that node to node_block_list or its op type to op_block_list"
                ) from exc
        for i, o in passed:
            out.graph.output.insert(i, o)
        record: dict[str, Any] = {
            "keep_io_types": self.config.keep_io_types,
            "blocked_op_types_present": sorted(source_ops & set(blocked)),
            "kept_float32_as_rejected_in_fp16": sorted(rejected),
            "kept_float32_for_blocked_ops_in_branches": holders,
            "casts_added": op_histogram(out).get("Cast", 0) - op_histogram(model).get("Cast", 0),
            "fp32_round_trips_removed": self._round_trips,
            **probed,
            **_out_of_range(model),
        }
        return PassResult(model=out, record=record)
