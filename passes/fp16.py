"""fp16: weights and compute in float16, graph inputs/outputs kept float32.

Uses ONNX Runtime's float16 converter (onnxruntime.transformers.float16, the same converter
onnxconverter-common ships), with a block-list of numerically fragile ops left in float32:
reductions (sums of many fp16 values overflow or lose precision), Pow/Exp/Log, Resize and
Range (coordinates), CumSum, and Softmax unless `keep_softmax_fp32: false`. The pass loads its
output on ONNX Runtime CPU before returning. An already-quantized model's integer ops
(compiler/core/quantized.py) stay float32 around: their scales and DynamicQuantizeLinear's
input are float32 only. An op type ORT still rejects in float16 (a type constraint, e.g.
Celu's) is kept float32 and the model converted again, recorded in the pass's record; a model
ORT still cannot run fails here, naming the node, instead of at packaging.

bf16 is not a graph precision here: ONNX Runtime CPU has no bf16 kernels for MatMul, Conv or
Add. Ask the backend for it instead (OpenVINO's inference precision, TensorRT's BF16 flag).
"""

from __future__ import annotations

import re
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import numpy_helper
from pydantic import model_validator

from compiler.core.errors import PassError
from compiler.core.quantized import is_quantized_op
from passes.base import (
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    op_histogram,
    sort_topologically,
)
from passes.ort_tools import quiet, session

__all__ = ["FRAGILE_OPS", "Fp16Config", "Fp16Pass"]

FRAGILE_OPS = (
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "Pow",
    "Exp",
    "Log",
    "Resize",
    "Range",
    "CumSum",
)
_FP16_MAX = 65504.0
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


class Fp16Pass(Pass[Fp16Config]):
    name = "fp16"
    # 2: a quantized source's integer ops stay float32 around (an int8 source's
    # DynamicQuantizeLinear takes float32 only), and an op type ONNX Runtime cannot load in
    # float16 is kept float32 and the model converted again
    version = "2"
    config_cls = Fp16Config
    precision: ClassVar[str | None] = "fp16"

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def _blocked_ops(self) -> list[str]:
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

        extra = ["Softmax"] if self.config.keep_softmax_fp32 else []
        return sorted({*DEFAULT_OP_BLOCK_LIST, *self.config.op_block_list, *extra})

    def _convert(self, model: onnx.ModelProto, blocked: list[str]) -> onnx.ModelProto:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        candidate = onnx.ModelProto()
        candidate.CopyFrom(model)
        with quiet("", "onnxruntime.transformers"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = convert_float_to_float16(
                candidate,
                keep_io_types=self.config.keep_io_types,
                op_block_list=blocked,
                node_block_list=list(self.config.node_block_list),
            )
        _sort_topologically(out.graph)
        return out

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        source_ops = set(op_histogram(model))
        # an already-quantized model's integer ops take float32 scales and inputs
        # (DynamicQuantizeLinear, QLinearConv's scales): they and their float inputs stay so
        blocked = sorted({*self._blocked_ops(), *filter(is_quantized_op, source_ops)})
        # op types ONNX Runtime still rejects in float16 (a type constraint, e.g. Celu's),
        # kept float32 and the model converted again
        rejected: dict[str, str] = {}
        while True:
            out = self._convert(model, blocked)
            try:
                session(out)
                break
            except Exception as exc:  # onnxruntime's own Fail/NotImplemented types
                msg = " ".join(str(exc).split())[:400]
                node = _node_in_error(msg)
                op = next((n.op_type for n in out.graph.node if node and n.name == node), "")
                if op in source_ops and op not in blocked and len(rejected) < _MAX_REJECTED:
                    rejected[op] = msg
                    blocked = sorted({*blocked, op})
                    continue
                where = f" at node '{node}'" if node else ""
                raise PassError(
                    f"fp16: ONNX Runtime CPU cannot load the converted model{where}: {msg}; "
                    "add that node to node_block_list or its op type to op_block_list"
                ) from exc
        record: dict[str, Any] = {
            "keep_io_types": self.config.keep_io_types,
            "blocked_op_types_present": sorted(source_ops & set(blocked)),
            "kept_float32_as_rejected_in_fp16": sorted(rejected),
            "casts_added": op_histogram(out).get("Cast", 0) - op_histogram(model).get("Cast", 0),
            **_out_of_range(model),
        }
        return PassResult(model=out, record=record)
