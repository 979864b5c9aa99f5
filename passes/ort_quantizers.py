"""ONNX Runtime's int8 quantizers as functions `(exclude, only) -> quantized model`, the shape
the accuracy loops (passes/accuracy.py, int8_search.py) search with: static QDQ with
calibrated activation ranges (computed once per method, shared between nodes through
passes/calibration_store.py), and dynamic int8."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from passes.accuracy import Quantize
from passes.calibration_store import calibration_digest, shared_calibration, shared_json
from passes.ort_tools import quiet

__all__ = [
    "DYNAMIC_OP_TYPES",
    "IntType",
    "OrtSettings",
    "dynamic_quantizer",
    "finite_ranges",
    "float_tensor_bytes",
    "histogram_refusal",
    "static_quantizer",
    "unshare_biases",
]

log = logging.getLogger(__name__)

IntType = Literal["u8", "s8"]
# Dynamic int8 of Conv (ConvInteger) is slower than fp32 on ONNX Runtime CPU: leave it out.
DYNAMIC_OP_TYPES = ("MatMul", "Attention", "LSTM", "Gather", "EmbedLayerNormalization")


# the ops whose input 2 ONNX Runtime's static quantizer quantizes as a bias (int32, with the
# scale of the node's input times its weight's)
BIAS_OPS = ("Conv", "ConvTranspose", "Gemm")


def unshare_biases(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each bias initializer that several Conv/ConvTranspose/Gemm nodes share
    copied, one per node, under a name no tensor has. ONNX Runtime's static quantizer copies
    a shared bias itself and names the copy by appending a number to the initializer's name,
    checked against initializers only: tf2onnx shares one zero bias among many convolutions
    and names a convolution's output that same way (basic_pitch: `.../conv1d_25` + `2` is
    the output `.../conv1d_252`), so the quantized model wired a bias into the graph in place
    of an activation and did not load. The float model computes the same with the copies."""
    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, list[int]] = {}  # bias name -> indices of the nodes that use it
    for i, node in enumerate(model.graph.node):
        if node.op_type in BIAS_OPS and len(node.input) > 2 and node.input[2] in inits:
            users.setdefault(node.input[2], []).append(i)
    shared = {name: indices for name, indices in users.items() if len(indices) > 1}
    if not shared:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {t for n in out.graph.node for t in (*n.input, *n.output)} | set(inits)
    taken |= {t.name for t in (*out.graph.input, *out.graph.output, *out.graph.value_info)}
    for name, indices in shared.items():
        for k, i in enumerate(indices[1:], start=1):
            copy_name = f"{name}__bias_copy{k}"
            while copy_name in taken:
                copy_name += "_"
            taken.add(copy_name)
            copy = out.graph.initializer.add()
            copy.CopyFrom(inits[name])
            copy.name = copy_name
            out.graph.node[i].input[2] = copy_name
    return out


@dataclass(frozen=True)
class OrtSettings:
    """The quantize config's fields ONNX Runtime's quantizers read."""

    op_types: Sequence[str]
    per_channel: bool
    reduce_range: bool
    percentile: float
    histogram_memory_mib: int = 2048


def _without_passed_inputs(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[tuple[int, onnx.ValueInfoProto]]]:
    """`model` without the outputs that are its own inputs passed through, and those outputs
    by position: ONNX Runtime 1.32's quantizer asserts "Graph is not a DAG" on them."""
    inputs = {i.name for i in model.graph.input}
    passed = [(k, o) for k, o in enumerate(model.graph.output) if o.name in inputs]
    if not passed:
        return model, []
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [o for o in model.graph.output if o.name not in inputs]
    del out.graph.output[:]
    out.graph.output.extend(kept)
    return out, passed


def _with_passed_inputs(
    model: onnx.ModelProto, passed: list[tuple[int, onnx.ValueInfoProto]]
) -> onnx.ModelProto:
    """The outputs `_without_passed_inputs` took out, back at their positions."""
    for k, output in passed:
        model.graph.output.insert(k, output)
    return model


def _qtype(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    return {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}[name]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def __len__(self) -> int:
        return len(self.feeds)


def histogram_refusal(method: str, feeds: list[dict[str, np.ndarray]]) -> str:
    """Why ONNX Runtime's histogram calibrators (entropy, percentile) cannot take these
    samples ("" when they can): they stack the samples, so all must have one shape."""
    shapes = sorted({str({k: np.shape(v) for k, v in f.items()}) for f in feeds})
    if len(shapes) <= 1:
        return ""
    return (
        f"{method} calibration needs samples of one shape (ONNX Runtime's histogram collector "
        f"stacks them), got {len(shapes)} shapes, e.g. {shapes[:2]}; give same-size samples"
    )


def float_tensor_bytes(model_file: Path, feed: dict[str, np.ndarray]) -> int | None:
    """Bytes of the float tensors one run of `model_file` on `feed` makes, every node's
    outputs kept, unoptimized: what ONNX Runtime's histogram calibrators hold per sample
    (their augmented model outputs every tensor they calibrate, on a session with graph
    optimizations off). None where that model cannot run (a tensor that cannot be an
    output, a model over protobuf's 2 GB)."""
    import onnxruntime as ort

    try:
        model = onnx.load(str(model_file))
        have = {o.name for o in model.graph.output}
        for node in model.graph.node:
            for name in node.output:
                if name and name not in have:
                    model.graph.output.add().name = name
                    have.add(name)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, feed)
    except Exception as exc:  # noqa: BLE001 - a measurement that cannot run caps nothing
        log.info("quantize: float tensor sizes not measured (%s)", exc)
        return None
    return sum(o.nbytes for o in outputs if isinstance(o, np.ndarray) and o.dtype.kind == "f")


def histogram_share(
    method: str, per_sample: int | None, samples: int, memory_mib: int
) -> tuple[int, str]:
    """How many of `samples` feeds (evenly spaced) a histogram calibrator (`method`) takes so
    that the float tensors it holds, `per_sample` bytes each, stay within `memory_mib`, and
    why ("" for all).

    ONNX Runtime 1.32's HistogramCalibrater.collect_data keeps every calibrated tensor of
    every sample until the last has run, then histograms each tensor over all of them:
    ppocr_det's normalized graph at 480x640 holds 523 MB a sample, 9.0 GB (peak RSS) and
    32 s for 16 samples, 2.4 GB and 5.3 s for 4, the ranges' median width within 2 % of the
    16-sample ones (AMX host, 2026-12-05). In the build (simplified graphs) ppocr_det's
    428 MiB a sample takes 4 of 16, its percentile collection 5.0 s, not 30.0 (0.25 s more
    to measure the 428 MiB); layout_cdla's 833 MiB takes 2. Its incremental path
    (collect_data once per chunk, as CalibStridedMinMax does) fails on an empty tensor
    (np.nanmax of a zero-size array) and re-bins with explicit edges, so fewer samples it
    is. Min/max calibration reduces each tensor in the graph and holds no more than its
    ranges: never capped."""
    if per_sample is None or per_sample <= 0 or samples <= 1:
        return samples, ""
    fit = max(1, (memory_mib << 20) // per_sample)
    if fit >= samples:
        return samples, ""
    return fit, (
        f"{method} calibrated on {fit} of {samples} samples, evenly spaced: one sample's float "
        f"tensors take {per_sample / 2**20:.0f} MiB and ONNX Runtime's histogram calibrator "
        f"holds them all until the last sample has run; histogram_memory_mib "
        f"{memory_mib} holds {fit}"
    )


def finite_ranges(cache: Path, model: onnx.ModelProto, tmp: Path) -> tuple[Path, list[str]]:
    """`cache` (ONNX Runtime's calibration cache) as it may be quantized with, and the nodes
    to keep in float for it. A tensor NaN in every calibration sample (the branch a Where
    does not take: sqrt(-x) where x > 0) gets a NaN range, and ONNX Runtime's quantizer stops
    on it ("AssertionError: scale issue"), losing the variant. Such ranges are left out of a
    copy of the cache, and the nodes that make or read those tensors stay float."""
    import json

    data = json.loads(cache.read_text(encoding="utf-8"))

    def all_finite(value: Any) -> bool:  # a number, a list, or {"data": [...], "dtype": ...}
        if isinstance(value, dict):
            keys = ("data", "lowest", "highest")
            return all(all_finite(v) for k, v in value.items() if k in keys)
        try:
            return bool(np.isfinite(np.asarray(value, np.float64)).all())
        except (TypeError, ValueError):
            return True  # not a range: nothing to say

    bad = {name for name, entry in data.get("data", {}).items() if not all_finite(entry)}
    if not bad:
        return cache, []
    data["data"] = {k: v for k, v in data["data"].items() if k not in bad}
    finite = tmp / f"{cache.stem}-finite.json"
    finite.write_text(json.dumps(data), encoding="utf-8")
    nodes = [n.name for n in model.graph.node if bad & {*n.input, *n.output} and n.name]
    return finite, nodes


def static_quantizer(
    model: onnx.ModelProto,
    feeds: list[dict[str, np.ndarray]],
    cfg: OrtSettings,
    types: tuple[IntType, IntType, bool],
    tmp: Path,
    method_name: str,
    store: Path | None,
    notes: dict[str, tuple[int, str]] | None = None,
) -> Quantize:
    """A function (exclude, only) -> quantized model; calibrates once (or reads the ranges
    another node of the build computed: passes/calibration_store.py), then reuses them.
    It raises ValueError where the method cannot calibrate these samples. A histogram
    method calibrates on as many samples as `cfg.histogram_memory_mib` holds
    (histogram_share); `notes` gets the method's count and why where that is fewer than all."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    act, weight, symmetric = types
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method_name]
    extra: dict[str, Any] = {"CalibPercentile": cfg.percentile}
    if symmetric:
        extra.update(ActivationSymmetric=True, WeightSymmetric=True)
    cache = tmp / f"calibration-{method_name}.json"
    # A path, not the ModelProto: given a proto, quantize_static saves it with
    # save_as_external_data=True, which rewrites the caller's proto in place.
    src = tmp / "float.onnx"
    model, passed = _without_passed_inputs(model)
    if not src.exists():
        onnx.save(unshare_biases(model), src)
    calls = [0]
    refusal = histogram_refusal(method_name, feeds) if method_name != "minmax" else ""

    # what the ranges depend on: never `reduce_range` or the excluded nodes (the weights)
    settings = {
        "method": method_name,
        "extra": extra,
        "op_types": sorted(cfg.op_types),
        "per_channel": cfg.per_channel,
        "types": (act, weight),
        "onnxruntime": ort.__version__,
    }

    chosen = [feeds]  # the samples calibrated on: histogram methods take a share
    finite: list[tuple[Path, list[str]]] = []  # the cache to quantize with, nodes kept float

    def share() -> list[dict[str, np.ndarray]]:
        if method_name == "minmax" or len(feeds) <= 1:
            return feeds
        # one measurement per model and sample shape, shared by the build's nodes
        key = f"float-tensor-bytes-{calibration_digest(src, feeds[:1], {})}"
        per_sample = shared_json(store, key, lambda: float_tensor_bytes(src, feeds[0]))
        n, why = histogram_share(method_name, per_sample, len(feeds), cfg.histogram_memory_mib)
        if why:
            log.info("quantize: %s", why)
            if notes is not None:
                notes[method_name] = (n, why)
        # evenly spaced, not the first n: data sorted by class or source stays represented
        return [feeds[int(i)] for i in np.linspace(0, len(feeds) - 1, n).round()]

    def quantize(exclude: list[str], only: list[str] | None) -> Path:
        if refusal:
            raise ValueError(refusal)
        made: list[Path] = []  # the first call calibrates, unless another node has
        if not cache.exists():
            chosen[0] = share()
            digest = calibration_digest(src, chosen[0], settings)
            if shared_calibration(store, digest, cache, lambda: made.append(run(exclude, only))):
                log.info("quantize: %s calibration ranges from another node", method_name)
        return made[0] if made else run(exclude, only)

    def run(exclude: list[str], only: list[str] | None) -> Path:
        calls[0] += 1
        dst = tmp / f"q-{method_name}-{calls[0]}.onnx"
        calibrated = cache.exists()
        if calibrated and not finite:  # the cache does not change once written: read once
            finite.append(finite_ranges(cache, model, tmp))
        ranges, unranged = finite[0] if calibrated else (cache, [])
        try:
            with quiet():
                quantize_static(
                    src,
                    dst,
                    _Reader(chosen[0]) if not calibrated else None,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(cfg.op_types) or None,
                    per_channel=cfg.per_channel,
                    reduce_range=cfg.reduce_range,
                    activation_type=_qtype(act),
                    weight_type=_qtype(weight),
                    nodes_to_quantize=only,
                    nodes_to_exclude=[*exclude, *unranged],
                    calibrate_method=method,
                    extra_options=extra,
                    calibration_cache_path=ranges,
                )
        except AssertionError:  # "scale issue": a range ONNX Runtime calibrated as NaN
            if calibrated or not cache.exists():
                raise
            finite.append(finite_ranges(cache, model, tmp))
            if not finite[0][1]:
                raise
            return run(exclude, only)  # the ranges are in the cache now: without the NaN ones
        if unranged and notes is not None:
            notes[f"{method_name}:unranged"] = (
                len(unranged),
                f"{', '.join(unranged[:8])}{' and more' if len(unranged) > 8 else ''} kept "
                "in float: a tensor they make or read was NaN in every calibration sample "
                "(no finite range to quantize it with)",
            )
        return dst

    return _reloading(quantize, passed)


def dynamic_quantizer(
    model: onnx.ModelProto, cfg: OrtSettings, weight: IntType, tmp: Path
) -> Quantize:
    from onnxruntime.quantization import quantize_dynamic

    src = tmp / "float.onnx"
    model, passed = _without_passed_inputs(model)
    onnx.save(model, src)
    calls = [0]

    def quantize(exclude: list[str], only: list[str] | None) -> Path:
        calls[0] += 1
        dst = tmp / f"d{calls[0]}.onnx"
        with quiet():
            quantize_dynamic(
                src,
                dst,
                op_types_to_quantize=list(cfg.op_types or DYNAMIC_OP_TYPES),
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                weight_type=_qtype(weight),
                nodes_to_quantize=only,
                nodes_to_exclude=exclude,
                # ONNX shape inference leaves com.microsoft ops' outputs (a fused
                # graph's Attention, SkipLayerNormalization) untyped: they are float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        return dst

    return _reloading(quantize, passed)


def _reloading(
    make: Callable[[list[str], list[str] | None], Path],
    passed: list[tuple[int, onnx.ValueInfoProto]],
) -> Quantize:
    """A `Quantize` that makes each model once, as a file (`make`), and reads that file again
    where the same call comes back: the int8 ranking times its finalists a second time on
    more samples (passes/accuracy.py rank_layers), and each quantizer call is ONNX Runtime's
    pass over the whole graph (ppocr_det's same job: 103 calls, 24 s with its two
    calibrations; 71 calls now). The files are the ones the quantizer writes anyway; nothing
    more is held in memory."""
    made: dict[tuple[tuple[str, ...], tuple[str, ...] | None], Path] = {}

    def quantize(exclude: list[str], only: list[str] | None) -> onnx.ModelProto:
        key = (tuple(exclude), None if only is None else tuple(only))
        if key not in made:
            made[key] = make(exclude, only)
        return _with_passed_inputs(onnx.load(made[key]), passed)

    return quantize
