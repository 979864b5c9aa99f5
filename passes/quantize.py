"""quantize: int8 with ONNX Runtime's quantizer, static QDQ or dynamic, types per target.

Static QDQ (calibrated activation ranges, per-channel weights) suits CNNs; dynamic int8
(weights int8, activation ranges computed per batch at run time) suits transformer and
recurrent graphs, whose activation ranges vary a lot between inputs. `mode: auto` picks
dynamic for graphs with LSTM/GRU/RNN, or with attention (MatMul -> Softmax -> MatMul) and
at least as many MatMul/Gemm as Conv nodes; static otherwise (passes/graph_facts.py).

`activation_type: auto` follows ONNX Runtime's CPU guidance: u8 activations with s8 weights
on x86-64 (the u8 x s8 VPMADDUBSW/VNNI kernels), s8/s8 on arm, symmetric s8/s8 on gpu
(TensorRT reads only symmetric int8 QDQ).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from pydantic import Field

from compiler.core.errors import NotApplicable, PassError
from compiler.core.graphs import nodes
from passes.accuracy import (
    AUTO_OFF,
    AccuracyAwareConfig,
    Budget,
    Quantize,
    SpeedFloor,
    keep_sensitive_layers_in_float,
    make_gates,
    shared_ranker,
)
from passes.base import (
    Pass,
    PassConfig,
    PassContext,
    PassResult,
    default_opset,
    op_histogram,
    quantized_ops,
)
from passes.graph_facts import graph_facts
from passes.int8_search import search_int8
from passes.ort_quantizers import (
    IntType,
    OrtSettings,
    dynamic_quantizer,
    histogram_refusal,
    static_quantizer,
)
from passes.ort_tools import relative_speed, simulates_int8
from passes.upcast import widen_for_int8

__all__ = [
    "GENERATED_DATA_WARNING",
    "QuantizeConfig",
    "QuantizePass",
    "foreign_ops",
    "nothing_to_quantize",
    "prepare_for_int8",
]

_PER_CHANNEL_OPSET = 13

# target -> (activations, weights, symmetric activations); None: the shared prefix.
AUTO_TYPES: dict[str | None, tuple[IntType, IntType, bool]] = {
    "cpu": ("u8", "s8", False),
    "arm": ("s8", "s8", False),
    "gpu": ("s8", "s8", True),
    None: ("u8", "s8", False),
}
# min_speedup's timing of an int8 model against its float model, in seconds (3 pairs at least)
_SPEED_SECONDS = 1.0

GENERATED_DATA_WARNING = (
    "calibration used GENERATED data (random feeds from the contract), not real inputs: "
    "activation ranges, and any accuracy figure measured on them, are not meaningful; "
    "give real samples (calibration data in the config) before trusting this int8 artifact"
)


class QuantizeConfig(PassConfig):
    name: Literal["quantize"] = "quantize"
    mode: Literal["auto", "static", "dynamic"] = "auto"
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: float = Field(default=99.999, gt=90, le=100)
    calibration_samples: int = Field(default=32, ge=1, le=10_000)
    histogram_memory_mib: int = Field(
        default=2048,
        ge=1,
        description=(
            "entropy and percentile calibration: the most memory ONNX Runtime's histogram "
            "calibrator may hold (it keeps every float tensor of every sample until the last "
            "has run); it calibrates on as many samples as fit, evenly spaced, and the record says so"
        ),
    )
    activation_type: Literal["auto", "u8", "s8"] = "auto"
    weight_type: Literal["auto", "u8", "s8"] = "auto"
    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] = Field(default=(), description="empty: ONNX Runtime's defaults")
    exclude_nodes: tuple[str, ...] = ()
    # Softmax output in 8 bits flips the top-1 of near-tied class scores (a 0.004 step on
    # probabilities); it costs little to leave it float.
    exclude_op_types: tuple[str, ...] = ("Softmax",)
    accuracy_aware: AccuracyAwareConfig = Field(default_factory=AccuracyAwareConfig)


def prepare_for_int8(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """A copy fit for int8 quantizers (ONNX Runtime's, NNCF's): unnamed nodes get stable names
    (so exclusions can address every node), and Constant-node tensors become initializers
    (quantizers quantize weights only when they are initializers; as Constants they would be
    treated as activations, per-tensor)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {n.name for n in graph.node if n.name}
    named = 0
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, named = name, named + 1
            taken.add(name)
    keep, moved = [], 0
    for node in graph.node:
        value = [
            a for a in node.attribute if a.name == "value" and a.type == onnx.AttributeProto.TENSOR
        ]
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and value:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            moved += 1
        else:
            keep.append(node)
    if moved:
        del graph.node[:]
        graph.node.extend(keep)
    folded = _fold_constant_casts(graph)
    return out, {
        "named_unnamed_nodes": named,
        "constants_to_initializers": moved,
        "constant_casts_folded": folded,
    }


def _fold_constant_casts(graph: onnx.GraphProto) -> int:
    """Casts of initializers become initializers of the cast type, the same values (in
    place; how many). NNCF 3.4's no-op-Cast pass reads a Cast's input as a typed value and
    fails on an initializer (`AttributeError: type`), and the Constants above are now
    initializers: silero_vad_16k_op15's STFT padding was. A Cast to a type numpy does not
    hold (bfloat16, float8, string) or to a graph output is left as it is."""
    inits = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep, folded = [], 0
    for node in graph.node:
        src = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        dtype = _numpy_dtype(to) if src is not None and node.domain in ("", "ai.onnx") else None
        if dtype is None or src is None or node.output[0] in outputs:
            keep.append(node)
            continue
        value = onnx.numpy_helper.to_array(src).astype(dtype)
        tensor = onnx.numpy_helper.from_array(value, node.output[0])
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
    return folded


def _numpy_dtype(onnx_type: int | None) -> np.dtype | None:
    """The numpy dtype of an ONNX tensor type, where numpy holds it natively."""
    if onnx_type is None:
        return None
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(onnx_type))
    except (KeyError, TypeError, ValueError):
        return None
    return dtype if dtype.kind in "biuf" and dtype.name != "bfloat16" else None


def _at_opset(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto | None, str]:
    """`model` converted to `opset` by onnx's version converter and "", or None and why not."""
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, opset), ""
    except Exception as exc:  # the converter raises bare RuntimeErrors per op
        return None, str(exc)


def _upgrade_for_per_channel(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Per-channel QDQ needs DequantizeLinear's `axis` (opset 13); upgrade older models."""
    opset = default_opset(model)
    if opset >= _PER_CHANNEL_OPSET:
        return model, ""
    upgraded, why_not = _at_opset(model, _PER_CHANNEL_OPSET)
    if upgraded is None:
        raise PassError(
            f"quantize: per-channel int8 needs opset >= {_PER_CHANNEL_OPSET}, the model has "
            f"{opset} and cannot be upgraded ({why_not}); set normalize.min_opset: "
            f"{_PER_CHANNEL_OPSET} or per_channel: false"
        )
    return upgraded, f"upgraded opset {opset} -> {_PER_CHANNEL_OPSET} for per-channel weights"


def _standard_attention(model: onnx.ModelProto) -> list[str]:
    """The names of the main graph's ONNX-domain Attention nodes (opset 23; the dynamo
    exporter writes them for scaled_dot_product_attention)."""
    return [
        n.name for n in model.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")
    ]


@functools.cache
def runs_quantization_ops(opset: int) -> bool:
    """Whether ONNX Runtime loads the ops its quantizers insert (QuantizeLinear,
    DequantizeLinear, DynamicQuantizeLinear) in a model of `opset`: tried on a model of
    those three, as its kernel registry and type constraints decide (QuantizeLinear-25's
    kernel does not take QuantizeLinear-28 on ONNX Runtime 1.32)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
            helper.make_node("DynamicQuantizeLinear", ["d"], ["y", "ys", "yz"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])],
        [
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - NOT_IMPLEMENTED, an opset it does not know
        return False
    return True


def _within_runtime_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """`model` at an opset whose quantization ops ONNX Runtime runs: an opset newer than the
    installed runtime's (QuantizeLinear-28 on ONNX Runtime 1.32) is converted down to the
    newest it runs, since the quantizers insert their ops at the model's opset and the int8
    model would not load; NotApplicable where the converter cannot."""
    import onnxruntime as ort

    opset = default_opset(model)
    if opset < _PER_CHANNEL_OPSET or runs_quantization_ops(opset):
        return model, ""
    lower = range(opset - 1, _PER_CHANNEL_OPSET - 1, -1)
    target = next((v for v in lower if runs_quantization_ops(v)), _PER_CHANNEL_OPSET)
    why = (
        f"ONNX Runtime {ort.__version__} has no kernel for QuantizeLinear/DequantizeLinear "
        f"at opset {opset}"
    )
    converted, why_not = _at_opset(model, target)
    if converted is None:
        raise NotApplicable(
            f"{why}, and the model cannot be converted to opset {target} ({why_not}); export "
            f"it at opset {target} or lower"
        )
    return converted, f"converted opset {opset} -> {target}: {why}"


class QuantizePass(Pass[QuantizeConfig]):
    name = "quantize"
    # also covers passes/accuracy.py and int8_search.py: bump on changes there; 4: skips a
    # quantized or half-precision model; 5: calibration method and float arithmetic searched;
    # 6: ort-int8-rr ranks layers with 8-bit weights, sharing ort-int8's ranking; 7: the
    # accuracy loop may keep recurrent layers (LSTM, GRU, RNN) in float, and a model with
    # nothing to quantize is skipped (NotApplicable), not failed; 8: the gate judges channels
    # of mixed scale one by one (compiler/core/parity.py); 10 (9 was a reverted change): COCO-
    # sized heads too (up to 1024 channels; rank 4+ on axis 1 only); 11: "nothing to
    # quantize" tells a quantizer that placed nothing on top-level weighted nodes apart; 12:
    # an fp16 model is widened to float32 and quantized (passes/upcast.py), not skipped; 13:
    # the gate compares outputs sized by the data (an NMS's detections; parity.py); 14: the
    # layer ranking runs in two rounds beyond 32 candidates (passes/accuracy.py); 16: the
    # gate reads a dense map's score channels as decisions at 0.5 (parity.py); 17: plain int8
    # is judged on every labelled sample, the search only where it fails there; 18: it
    # chooses on the second half where plain int8 passes the first and fails the second;
    # 19: Casts of constants folded first (NNCF failed on them), the nodes sorted again
    # after (ORT's quantizer put an If before the If whose output its branch reads); 20:
    # `accuracy_aware.enabled: auto` searches on the user's data only, as NNCF's control does;
    # 21: attention as the dynamo exporter and tf2onnx write it is found (graph_facts.py);
    # 22: outputs that pass an input through are kept out of ORT's quantizer ("not a DAG");
    # 23: the search stops where its int8 model is no faster than float (min_speedup); 24:
    # histogram calibration takes the samples histogram_memory_mib holds (ort_quantizers.py);
    # 25: an opset newer than ONNX Runtime's quantization kernels is converted down to theirs;
    # 26: ONNX-domain Attention nodes (opset 23) are kept in float; 27: the gate lets the
    # reference's own NaN and infinities agree (parity.py); 28: nodes making or reading a
    # tensor NaN in every calibration sample stay float (ort_quantizers.py finite_ranges); 29:
    # the gate judges index outputs by decided agreement with the reference's scores
    version = "29"
    config_cls = QuantizeConfig
    target_dependent: ClassVar[bool] = True
    uses_calibration: ClassVar[bool] = True
    uses_reference: ClassVar[bool] = True
    precision: ClassVar[str | None] = "int8"

    def libraries(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"onnx": onnx.__version__, "onnxruntime": ort.__version__}

    def _types(self, target: str | None) -> tuple[IntType, IntType, bool]:
        act, weight, symmetric = AUTO_TYPES.get(target, AUTO_TYPES[None])
        cfg = self.config
        if cfg.activation_type != "auto":
            act = cfg.activation_type
        if cfg.weight_type != "auto":
            weight = cfg.weight_type
        return act, weight, symmetric

    def _prepare(
        self, model: onnx.ModelProto, ctx: PassContext
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        return widen_for_int8(model, ctx)

    def _run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        cfg = self.config
        model, prepared = prepare_for_int8(model)
        upgraded = ""
        if cfg.per_channel:
            model, upgraded = _upgrade_for_per_channel(model)
        model, converted = _within_runtime_opset(model)
        upgraded = upgraded or converted
        facts = graph_facts(model)
        mode = cfg.mode
        if mode == "auto":
            mode = "dynamic" if facts.prefers_dynamic_int8() else "static"
        unknown = sorted(set(cfg.exclude_nodes) - {n.name for n in model.graph.node})
        if unknown:
            raise PassError(
                f"quantize: exclude_nodes {unknown} are not nodes of the model; "
                "names are the node names in the input graph (see the build log's ops)"
            )
        standard_attention = _standard_attention(model)
        exclude = sorted(
            {
                *cfg.exclude_nodes,
                *(n.name for n in model.graph.node if n.op_type in cfg.exclude_op_types),
                *standard_attention,
            }
        )
        act, weight, symmetric = self._types(ctx.target)
        settings = OrtSettings(
            cfg.op_types,
            cfg.per_channel,
            cfg.reduce_range,
            cfg.percentile,
            cfg.histogram_memory_mib,
        )
        notes: dict[str, tuple[int, str]] = {}  # method -> the samples it took where not all, why
        record: dict[str, Any] = {
            "mode": mode,
            "mode_rule": f"{cfg.mode}: {facts.describe()}",
            "activation_type": act if mode == "static" else "dynamic u8",
            "weight_type": weight,
            "per_channel": cfg.per_channel,
            "excluded_nodes": exclude,
        }
        record.update({k: v for k, v in prepared.items() if v})
        if standard_attention:
            record["attention_kept_float"] = (
                f"{len(standard_attention)} ONNX Attention node(s) (opset 23) kept in float: "
                "ONNX Runtime's quantizer takes every 'Attention' for its own com.microsoft "
                "op and wrote a QAttention the runtime refused; the MatMuls around them are "
                "quantized"
            )
        if upgraded:
            record["opset"] = upgraded
        with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
            if mode == "static":
                feeds = self._calibration(ctx, record)
            else:
                feeds = ctx.calibration()[: cfg.calibration_samples]
            types = (act, weight, symmetric)
            search = self._searches(ctx)
            if not search and cfg.accuracy_aware.enabled == "auto":
                record["accuracy_aware_off"] = AUTO_OFF
            quantizers = self._quantizers(
                model, feeds, settings, types, Path(tmp), ctx, mode, search, notes
            )
            first = next(iter(quantizers.values()))
            out = first(exclude, None)
            if not quantized_ops(op_histogram(out)) and not cfg.op_types and not cfg.exclude_nodes:
                raise NotApplicable(nothing_to_quantize(model, "ONNX Runtime"))
            self._check_quantized(out)
            if search:
                # layers are ranked with 8-bit weights, as ort-int8 ranks them: the two nodes
                # of the default pipeline then share one ranking (calibration_store.py)
                rank_settings = replace(settings, reduce_range=False)
                rankers = quantizers
                if cfg.reduce_range:
                    ranking = Path(tmp) / "ranking"
                    ranking.mkdir()
                    rankers = self._quantizers(
                        model, feeds, rank_settings, types, ranking, ctx, mode, search, notes
                    )
                shared = {"mode": mode, "types": types, "settings": repr(rank_settings)}
                out, record["accuracy_aware"] = self._accuracy_aware(
                    model,
                    out,
                    quantizers,
                    exclude,
                    feeds,
                    ctx,
                    mode == "static",
                    (rankers, shared),
                )
                self._check_quantized(out, "the accuracy loop kept every node float")
                if mode == "static":
                    record["calibration"]["method"] = record["accuracy_aware"]["quantizer"][
                        "chosen"
                    ]
            if mode == "static" and record["calibration"]["method"] in notes:
                taken, why = notes[record["calibration"]["method"]]
                record["calibration"].update(samples=taken, note=why)
            if mode == "static" and f"{record['calibration']['method']}:unranged" in notes:
                record["calibration"]["kept_float"] = notes[
                    f"{record['calibration']['method']}:unranged"
                ][1]
        uses_data = mode == "static" or search
        record["quantized_ops"] = quantized_ops(op_histogram(out))
        generated = ctx.calibration_source == "generated"
        warnings = [GENERATED_DATA_WARNING] if generated and uses_data else []
        return PassResult(model=out, record=record, warnings=warnings)

    def _quantizers(
        self,
        model: onnx.ModelProto,
        feeds: list[dict[str, np.ndarray]],
        settings: OrtSettings,
        types: tuple[IntType, IntType, bool],
        tmp: Path,
        ctx: PassContext,
        mode: str,
        search: bool,
        notes: dict[str, tuple[int, str]] | None = None,
    ) -> dict[str, Quantize]:
        """The quantizers the search tries, by name: one static per calibration method (the
        config's first), or the dynamic one. `notes`: what calibrated on fewer samples."""
        if mode != "static":
            return {"dynamic": dynamic_quantizer(model, settings, types[1], tmp)}
        return {
            method: static_quantizer(model, feeds, settings, types, tmp, method, ctx.shared, notes)
            for method in self._methods(search)
        }

    def _searches(self, ctx: PassContext) -> bool:
        """Whether the accuracy-aware search runs: `auto` on the user's data only (a choice
        fitted to generated noise would be judged on noise; the artifact is unverified)."""
        enabled = self.config.accuracy_aware.enabled
        return enabled is True or (enabled == "auto" and ctx.calibration_source == "user")

    def _methods(self, search: bool) -> list[str]:
        """Calibration methods in the order the accuracy loop tries them: the config's first."""
        cfg = self.config
        others = cfg.accuracy_aware.calibration_methods if search else ()
        return list(dict.fromkeys([cfg.calibration_method, *others]))

    def _accuracy_aware(
        self,
        model: onnx.ModelProto,
        out: onnx.ModelProto,
        quantizers: dict[str, Quantize],
        exclude: list[str],
        feeds: list[dict[str, np.ndarray]],
        ctx: PassContext,
        static: bool,
        ranking: tuple[dict[str, Quantize], dict[str, Any]],
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """Calibration method and float arithmetic first (passes/int8_search.py; dynamic
        int8 leaves arithmetic float anyway), then single layers back to float
        (passes/accuracy.py), all judged by one gate; not started, or stopped after the
        coarse steps, where the model runs under min_speedup times its float model."""
        aa = self.config.accuracy_aware
        if not feeds:
            raise PassError("quantize: accuracy_aware needs sample data; none was given")
        gates = make_gates(model, ctx, feeds, aa.min_cosine, aa.min_top1)
        check = gates.first_check(out)
        if check.whole.passed or check.blind:
            first = next(iter(quantizers))
            return out, {**gates.unchanged(check), "quantizer": {"chosen": first}}
        gate, budget = check.gate, Budget(aa.max_seconds)
        floor = self._speed_floor(model, gate.feeds[0], ctx)
        slow = floor.below(out, "the int8 model as first quantized") if floor else None
        if slow is not None:
            first = next(iter(quantizers))
            return out, {**gates.unchanged(check), "quantizer": {"chosen": first}, "speed": slow}
        found = search_int8(
            model,
            quantizers,
            gate,
            exclude,
            aa.arithmetic_float and static,
            (out, check.result),
            budget,
        )
        if floor is not None and found.exclude != exclude and not found.result.passed:
            slow = floor.below(found.model, "the int8 model its coarse steps found")
            if slow is not None:
                record = {**found.record, "gate_before": check.whole.record(), "speed": slow}
                record.update(kept_in_float=[], gate_after=found.result.record())
                if check.chosen:
                    record["searched_on"] = check.chosen
                return found.model, record
        rankers, settings = ranking
        ranker = shared_ranker(
            rankers[found.method],
            gate,
            aa.ranking_samples,
            ctx.shared,
            model,
            {**settings, "method": found.method, "pass": self.version, **self.libraries()},
        )
        out, loop = keep_sensitive_layers_in_float(
            model,
            found.model,
            quantizers[found.method],
            gate,
            found.exclude,
            aa,
            found.result,
            ranker,
            budget,
        )
        # the plain model's verdict on every sample before, the kept model's on the search's after
        record = {**found.record, **loop, "gate_before": check.whole.record()}
        if check.chosen:
            record["searched_on"] = check.chosen
        record["gate_after"] = loop.get("gate_after", loop["gate_before"])
        return out, record

    def _speed_floor(
        self, model: onnx.ModelProto, feed: dict[str, np.ndarray], ctx: PassContext
    ) -> SpeedFloor | None:
        """min_speedup against `model`, the float model, where this host can tell: the target
        runs on its architecture (ctx.target_isa) and its int8 kernels run natively (where
        they may saturate, the search runs Q/DQ unfused and its speed says nothing)."""
        minimum = self.config.accuracy_aware.min_speedup
        if minimum is None or not ctx.target_isa or simulates_int8():
            return None
        return SpeedFloor(minimum, lambda m: relative_speed(m, model, feed, _SPEED_SECONDS))

    def _calibration(self, ctx: PassContext, record: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        feeds = ctx.calibration()[: self.config.calibration_samples]
        if not feeds:
            raise PassError(
                "quantize (static): no calibration samples; give calibration data in the "
                "config, or use mode: dynamic"
            )
        method = self.config.calibration_method
        if method != "minmax" and (why := histogram_refusal(method, feeds)):
            raise PassError(f"quantize: {why}; use calibration_method: minmax")
        record["calibration"] = {
            "method": self.config.calibration_method,
            "samples": len(feeds),
            "source": ctx.calibration_source,
        }
        return feeds

    def _check_quantized(
        self, out: onnx.ModelProto, why: str = "no ops of the quantizable types, or all excluded"
    ) -> None:
        """A config that leaves nothing to quantize (its op_types, its exclusions) is an
        error; a model with nothing ONNX Runtime quantizes was skipped before this."""
        if not quantized_ops(op_histogram(out)):
            raise PassError(
                f"quantize: no node was quantized ({why}); set op_types, fewer exclusions, "
                "or drop the int8 variant"
            )


_WEIGHTED = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention")


def foreign_ops(model: onnx.ModelProto) -> list[str]:
    """`domain.op` of the model's ops outside the ONNX domain, sorted (ai.onnx.ml's Scaler
    from skl2onnx, com.microsoft's fused ops): quantizers may not know their outputs' types."""
    return sorted(
        {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
    )


def nothing_to_quantize(model: onnx.ModelProto, tool: str) -> str:
    """Why int8 does not apply to a model where `tool`'s default quantizer found nothing
    (silero_vad: every Conv and LSTM sits inside an If branch)."""
    top = sum(n.op_type in _WEIGHTED for n in model.graph.node)
    inner = sum(n.op_type in _WEIGHTED for n in nodes(model.graph)) - top
    if inner and not top:
        where = (
            f"its {inner} Conv/MatMul/Gemm/recurrent nodes are all inside If/Loop/Scan "
            f"subgraphs, which {tool}'s quantizer does not reach"
        )
    elif top:
        where = (
            f"its quantizer placed nothing on the model's {top} Conv/MatMul/Gemm/recurrent node(s)"
        )
        foreign = foreign_ops(model)
        if foreign:
            shown = ", ".join(foreign[:8])
            where += f" (the model holds ops outside the ONNX domain it may not type: {shown})"
    else:
        where = "it has no Conv, MatMul, Gemm or recurrent node with constant weights"
    return f"nothing for {tool} int8 to quantize: {where}"
