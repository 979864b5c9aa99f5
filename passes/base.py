"""Pass infrastructure: a pass is a small object with a typed config and a declared contract.

A pass turns one ONNX model into another. The base class checks the contract around the
subclass's `_run`: the output is a valid model whose graph inputs and outputs keep the names,
dtypes and ranks of the input model (a pass may never silently rename the interface), and it
records nodes and size before/after. Passes stay free of caching and
timing; the scheduler's instruments do that around them.
"""

from __future__ import annotations

import heapq
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict

from compiler.core.contract import Contract
from compiler.core.errors import NotApplicable, PassError
from compiler.core.feeds import Feeds
from compiler.core.graphs import defined, float_weights, nodes, subgraphs, weights_precision
from compiler.core.parity import IndexScores
from compiler.core.quantized import quantized_ops
from compiler.core.records import PassRecord
from compiler.core.tolerance import Precision, TaskSpec, Tolerance

__all__ = [
    "node_reads",
    "Pass",
    "PassConfig",
    "PassContext",
    "PassResult",
    "default_opset",
    "grew_by_folding",
    "model_size_bytes",
    "op_histogram",
    "double_precision",
    "half_precision",
    "quantized_ops",
    "source_precision",
]


class PassConfig(BaseModel):
    """Base of every pass config; `name` is the discriminator in config files."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str


C = TypeVar("C", bound=PassConfig)


@dataclass
class PassContext:
    """What a pass may read besides the model.

    `target` is the target the branch builds for ("cpu", "arm", "gpu"), or None in the shared
    prefix. `calibration` returns sample feeds for calibration (user data when given, else
    generated from the contract); `calibration_source` says which ("user" or "generated").
    `reference` runs the normalized fp32 model on ONNX Runtime for given feeds, so
    accuracy-aware passes can gate on the same reference the package reports against (and
    `reference_scores` gives the scores behind its index outputs, as the verdict reads), with
    the build's `tolerances` per precision and `output_tolerances` per output (parity.outputs)
    and each output's kind (`contract`). `task` is the build's task metric; `validation`
    returns the parity samples and `labels` their labels (None without labels), which an
    accuracy-aware gate scores the task on. `shared` is a folder the build's nodes share
    (None: none), for results several nodes would compute alike, stored by content digest
    (passes/calibration_store.py).
    """

    contract: Contract
    workdir: Path
    target: str | None = None
    target_isa: tuple[str, ...] = ()
    calibration: Callable[[], list[dict[str, np.ndarray]]] = lambda: []
    calibration_source: str = "generated"
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    # the reference's scores behind index outputs for given feeds (compiler.core.parity
    # IndexScores, per feed), None where the model has none or they do not fit
    reference_scores: Callable[[Sequence[Feeds]], list[dict[str, IndexScores]] | None] | None = None
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    output_tolerances: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)
    task: TaskSpec | None = None
    validation: Callable[[], list[dict[str, np.ndarray]]] = lambda: []
    labels: Callable[[], list[Any] | None] = lambda: None
    shared: Path | None = None


@dataclass
class PassResult:
    """A pass's output. `record` holds the pass's own facts (JSON-able, for reports); the base
    class adds the typed `summary` every pass shares (node counts, sizes, warnings)."""

    model: onnx.ModelProto
    record: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""  # non-empty: the pass changed nothing, and why
    warnings: list[str] = field(default_factory=list)  # things a user must know
    summary: PassRecord | None = None


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    hist: dict[str, int] = {}
    for node in nodes(model.graph):
        hist[node.op_type] = hist.get(node.op_type, 0) + 1
    return dict(sorted(hist.items()))


def half_precision(model: onnx.ModelProto) -> Precision | None:
    """fp16/bf16 when most of the model's float weights (by element count) are, else None."""
    return weights_precision(model)


def double_precision(model: onnx.ModelProto) -> bool:
    """Whether most of the model's float weights (by element count) are float64."""
    counts = float_weights(model)
    return counts[onnx.TensorProto.DOUBLE] * 2 > sum(counts.values())


def node_reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs and what its subgraphs read from outside them."""
    names = {i for i in node.input if i}
    for g in subgraphs(node):
        names |= {x for n in g.node for x in node_reads(n)} - defined(g)
    return names


def sort_topologically(graph: onnx.GraphProto) -> bool | None:
    """Order `graph`'s nodes producers first (in place), as ONNX requires: True when that moved
    a node, False when they were in order, None, leaving them, when they form a cycle. Kahn's
    algorithm taking ready nodes in their original order, so a sorted graph is unchanged and
    the result is stable. A node with a subgraph (If, Loop, Scan) waits for the outer values
    its subgraphs read."""
    nodes = list(graph.node)
    produced_by = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps = [
        {produced_by[x] for x in node_reads(n) if x in produced_by and produced_by[x] != i}
        for i, n in enumerate(nodes)
    ]
    users: dict[int, list[int]] = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users.get(i, []):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        return None
    if order == sorted(order):
        return False
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)
    return True


def source_precision(model: onnx.ModelProto) -> Precision:
    """What a model computes in: int8 when it holds quantized ops, fp16/bf16 when most of its
    float weights are half precision, else fp32."""
    if quantized_ops(op_histogram(model)):
        return "int8"
    return half_precision(model) or "fp32"


def model_size_bytes(model: onnx.ModelProto) -> int:
    return model.ByteSize()


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the ONNX domain (0 where it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


# a pass's output more than this many times its input's size, and _GROWTH_MIN_BYTES more,
# grew by constant folding (an Expand, Tile or ConstantOfShape of a constant materialized)
_GROWTH = 2
_GROWTH_MIN_BYTES = 2**20


def grew_by_folding(before: onnx.ModelProto, after: onnx.ModelProto) -> bool:
    """Whether `after` is so much larger than `before` that folding grew it (simplify, fuse)."""
    return after.ByteSize() > _GROWTH * before.ByteSize() + _GROWTH_MIN_BYTES


def _interface(model: onnx.ModelProto) -> dict[str, tuple[str, int, int]]:
    """name -> (input|output, element type, rank): what a pass must keep. Inputs that are
    initializers (IR < 4 lists weights as inputs) are not; an output that is a weight is (a
    quantizer may then compute it, e.g. NNCF's DequantizeLinear)."""
    inits = {i.name for i in model.graph.initializer}
    sig = {}
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            if kind == "input" and vi.name in inits:
                continue
            tt = vi.type.tensor_type
            rank = len(tt.shape.dim) if tt.HasField("shape") else -1
            sig[vi.name] = (kind, tt.elem_type, rank)
    return sig


class Pass(ABC, Generic[C]):
    """Subclasses set `name`, `version` and `config_cls`, and implement `_run`.

    Bump `version` whenever the pass's output for the same input and config can change:
    it enters the cache key.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    config_cls: ClassVar[type[PassConfig]]
    # The DAG reads these to build cache keys and node identity:
    # target_dependent: output depends on ctx.target/target_isa (the node is not shared
    #   across targets); uses_calibration: output depends on ctx.calibration() data;
    #   uses_reference: output depends on ctx.reference (the normalized model).
    target_dependent: ClassVar[bool] = False
    uses_calibration: ClassVar[bool] = False
    uses_reference: ClassVar[bool] = False
    # The precision the pass's output computes in ("int8", "fp16"); None: numerics preserved.
    # A variant's precision is the lossiest of its passes' and its backend's (pipeline/config.py).
    precision: ClassVar[str | None] = None

    def __init__(self, config: C) -> None:
        if not isinstance(config, self.config_cls):
            raise TypeError(f"{type(self).__name__} takes {self.config_cls.__name__}")
        self.config = config

    def libraries(self) -> dict[str, str]:
        """Versions of the libraries whose behaviour shapes this pass's output (cache key)."""
        return {"onnx": onnx.__version__}

    def check(self, model: onnx.ModelProto) -> None:
        """Raise ValidationError or ValueError where `model`, the pass's output, is not valid.
        ONNX Runtime registers ops of its own in the default domain, which ONNX's checker
        does not know (SimplifiedLayerNormalization, fused from a T5 or LLaMA RMSNorm by the
        fuse pass and read by the passes after it): there ONNX Runtime loading it decides."""
        try:
            onnx.checker.check_model(model, full_check=False)
        except onnx.checker.ValidationError as exc:
            if "No Op registered for" not in str(exc):
                raise
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                ort.InferenceSession(model.SerializeToString(), opts, ["CPUExecutionProvider"])
            except Exception as load:  # onnxruntime's Fail/InvalidGraph: no common base
                raise ValueError(f"{exc}; ONNX Runtime cannot load it either: {load}") from load

    @abstractmethod
    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult: ...

    def _prepare(
        self, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """The model `_run` works on, and facts for the record: the input as it is here; the
        int8 passes widen an fp16 model to float32 (passes/upcast.py)."""
        return model, {}

    def __call__(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        before_ops, before_size = op_histogram(model), model_size_bytes(model)
        quantized = quantized_ops(before_ops)
        if self.precision == "int8" and quantized:
            shown = ", ".join(f"{n} {op}" for op, n in sorted(quantized.items())[:4])
            raise NotApplicable(
                f"pass '{self.name}': the model is already quantized ({shown}): int8 is the "
                "source's own, and this target's other variants carry it; disable this "
                "variant (--set TARGET.VARIANT.enabled=false) to leave it out"
            )
        if self.precision is not None and double_precision(model):
            raise NotApplicable(
                f"pass '{self.name}': the model computes in float64 (most of its weights are "
                f"double); {self.precision} here starts from float32 models: export it in "
                "float32 (torch: module.float(); skl2onnx: float inputs), or disable this "
                "variant (--set TARGET.VARIANT.enabled=false)"
            )
        model, prepared = self._prepare(model, ctx)
        if self.precision == "int8" and (half := half_precision(model)):
            raise NotApplicable(
                f"pass '{self.name}': the model's weights are {half}; int8 calibration "
                f"quantizes float32 models: quantize its float32 original, or disable this "
                "variant (--set TARGET.VARIANT.enabled=false)"
            )
        before_sig = _interface(model)
        try:
            result = self._run(model, ctx)
        except (PassError, NotApplicable):  # ours: already say which pass and why
            raise
        except Exception as exc:  # a library deep inside failed: say which pass and why
            raise PassError(f"pass '{self.name}' failed: {type(exc).__name__}: {exc}") from exc
        result.record.update(prepared)
        # a library may order nodes by their listed inputs alone (ONNX Runtime's quantizer
        # put silero_vad_half's `If`, whose branch reads another `If`'s output, before it):
        # sorted again, stably, so a graph in order is left as it is
        if sort_topologically(result.model.graph):
            result.record["reordered"] = "nodes sorted again: a subgraph read a later value"
        after_sig = _interface(result.model)
        if after_sig != before_sig:
            raise PassError(
                f"pass '{self.name}' changed the model interface: before {before_sig}, "
                f"after {after_sig}; passes must keep input/output names, dtypes and ranks"
            )
        try:
            self.check(result.model)
        except (onnx.checker.ValidationError, ValueError) as exc:
            # models > 2 GB cannot be checked in memory; anything else is a broken pass
            if "2GB" not in str(exc) and "2 GB" not in str(exc):
                raise PassError(f"pass '{self.name}' produced an invalid model: {exc}") from exc
        after_ops = op_histogram(result.model)
        result.summary = PassRecord(
            name=self.name,
            version=self.version,
            nodes_before=sum(before_ops.values()),
            nodes_after=sum(after_ops.values()),
            bytes_before=before_size,
            bytes_after=model_size_bytes(result.model),
            ops_before=before_ops,
            ops_after=after_ops,
            skipped=result.skipped,
            warnings=list(result.warnings),
            details=json.loads(json.dumps(result.record)),
        )
        return result
