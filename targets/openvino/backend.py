"""OpenVINO backend: one IR (.xml + .bin) for `cpu` (x86-64) and `arm` (aarch64).

The IR is hardware-independent; the CPU plugin specializes it when the serving host compiles
it. The artifact records the inference precision of its float ops (`inference_precision`)
and targets/openvino/runtime.py compiles exactly that, or refuses.

The backend converts whatever ONNX the pipeline hands it: a QDQ model (from the `quantize` or
`nncf` pass) becomes FakeQuantize and runs its quantized ops in int8, the rest in f32; a source
quantized in operator form is converted with its integer ops (ConvInteger/MatMulInteger after
DynamicQuantizeLinear) or, for the QLinear* ops OpenVINO's frontend does not read, first
rewritten into QDQ form (targets/openvino/qdq.py).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import onnx
from pydantic import Field

from compiler.core.errors import BackendUnavailable, BuildError, NotApplicable
from compiler.core.graphs import weights_precision
from compiler.core.host import Requirements
from compiler.core.isa import BF16_FLAGS, meant_for
from compiler.core.quantized import QDQ_OPS, quantized_ops
from compiler.core.settings import OpenVinoSettings
from compiler.core.telemetry import telemetry_off
from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult
from targets.frontend_gaps import openvino_gaps
from targets.int8_flavour import with_int8_flavour
from targets.openvino.float_layers import keep_in_f32
from targets.openvino.qdq import QdqRewrite, operator_form_ops, to_qdq
from targets.openvino.rewrites import (
    coerced_softmaxes,
    explicit_pool_padding,
    flatten_coerced_softmaxes,
    fractional_lrn_biases,
    ignored_reduction_axes,
    padded_ceil_average_pools,
    scalar_if_conditions,
    sink_layout_transposes,
    sinkable,
    spelled_out_reductions,
    unit_lrn_biases,
    wide_if_conditions,
)
from targets.openvino.runtime import INSTALL, compile_ir, import_openvino, openvino_message

__all__ = ["OpenVinoBackend", "OpenVinoOptions"]

_ARCH = {"cpu": "x86_64", "arm": "aarch64"}
_XML, _BIN = "model.xml", "model.bin"
# the artifact precisions openvino builds (fp16 models: use onnxruntime or tvm)
_PRECISIONS = ("bf16", "fp32", "int8")
# The CPU plugin accepts bf16 on any AVX-512 core (or AVX2-VNNI-2) and falls back to f32
# elsewhere; without AVX512_BF16 or AMX-BF16 it emulates bf16, slower than f32 (OpenVINO's
# bf16 guide, compiler/core/isa.py). So a bf16 artifact needs AVX-512 and one of the native
# bf16 flags (`isa_any`): AMX hosts qualify by either.
_BF16_ISA = {"x86_64": ["avx512bw", "avx512f", "avx512vl"]}


class OpenVinoOptions(BackendOptions):
    backend: Literal["openvino"] = "openvino"
    # what the CPU plugin computes float ops in (int8 comes from a quantize/nncf pass; an int8
    # artifact compiles f32 outside its quantized ops)
    inference_precision: Literal["f32", "bf16"] = "f32"
    # IR weights stored as f16 (half the size; decompressed to f32 at load). Recorded in the
    # runtime so the manifest says what was shipped.
    compress_to_fp16: bool = False
    # applied on the serving host when the IR is compiled
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    num_threads: int = Field(default=0, ge=0, description="0: OpenVINO's default")
    num_streams: int = Field(default=0, ge=0, description="0: the performance hint decides")
    # OpenVINO pins its threads to cores by default on Linux; on a host shared with other
    # processes that made p50 8-13x worse (docs/openvino.md). Pin only on a dedicated host.
    cpu_pinning: bool = False
    # a model with dynamic input dims: input shapes, each on its second run, the runner
    # compiles with every dim fixed, at most this many (runtime.py; each a compile and its
    # memory, once); 0: run the model as built. The build's sweep tries the other way.
    static_shapes: int = Field(
        default=2, ge=0, description="input shapes compiled static; 0: run the model as built"
    )
    min_runtime_version: str = ""  # "": the year.minor of the OpenVINO that built the IR
    # bf16 only: where bf16 throughout fails the package's bf16 gate at build (user data
    # only), the first run of conv/matmul layers from the inputs or the outputs, up to this
    # many, whose f32 makes it pass runs f32 (targets/openvino/float_layers.py); 0: never
    float_layers: int = Field(default=16, ge=0)

    def compute_precision(self) -> str:
        return {"f32": "fp32", "bf16": "bf16"}[self.inference_precision]


def _ov_version() -> str:
    return importlib.metadata.version("openvino")


class OpenVinoBackend(Backend):
    name = "openvino"
    version = "17"  # 2: auto-named layers renamed by position (byte-stable IR); 3: requirements
    # say the int8 flavour, and bf16 needs native bf16 (isa_any); 4: a source quantized in
    # operator form (ConvInteger, QLinear*) is int8, not refused for lacking Q/DQ nodes;
    # 5: bf16 keeps the layers its gate needs in f32; 6: QLinear* sources go through QDQ form;
    # 7: outputs that pass an input through are left out of the IR (the runtime returns feeds);
    # 8: bf16's f32-layer search chooses on the other half where bf16 passes the first;
    # 9: a dynamic model's runner compiles 2 input shapes static by default; 10: layout
    # Transposes after an innermost-axis Concat move above it (rewrites.py); 11: If
    # conditions of rank 2 or more are squeezed to scalars (rewrites.py); 12: ops with no
    # conversion rule are not applicable (a remembered failure is not reused); 13: antialiased
    # downsampling Resizes, whose antialias OpenVINO ignores, are not applicable; 14: cubic
    # Resizes with exclude_outside too; Softmaxes before opset 13 spelled out, LRN biases made 1;
    # 15: LSTM peepholes and column-major MaxPool indices are not applicable; 16: recurrent
    # ops given sequence_lens on a dynamic input, and Resizes keeping the aspect ratio, too;
    # an fp16 source's weights in Constants; a bf16 IR is compiled in bf16 where the CPU can;
    # 17: ReduceL1, ReduceLogSum and ReduceLogSumExp given axes at opsets 13-17 spelled out,
    # AveragePools counting their padding with ceil_mode given it explicitly; LSTMs with
    # input_forget and recurrent ops with per-direction activations are not applicable
    targets = frozenset({"cpu", "arm"})
    options_cls = OpenVinoOptions

    @classmethod
    def availability(cls, target: str) -> Availability:
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no openvino artifact for target '{target}'")
        if importlib.util.find_spec("openvino") is None:
            return Availability(ok=False, reason="openvino is not installed", install=INSTALL)
        return Availability(ok=True)

    @classmethod
    def judged(cls, options: BackendOptions) -> bool:
        assert isinstance(options, OpenVinoOptions)
        return options.inference_precision == "bf16" and options.float_layers > 0

    @classmethod
    def runtime_availability(cls) -> Availability:
        try:
            import_openvino()
        except BackendUnavailable as exc:
            return Availability(ok=False, reason=exc.reason, install=INSTALL)
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        return {"openvino": _ov_version()}

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, OpenVinoOptions)
        if request.target not in self.targets:
            raise BuildError(f"openvino builds for {sorted(self.targets)}, not '{request.target}'")
        source = _load_onnx(model_path)
        # fp16 only as a model's own weights (an fp16 source or pass): OpenVINO runs them as is
        half = weights_precision(source) == "fp16"  # in initializers or Constant nodes
        if request.precision not in _PRECISIONS and not (request.precision == "fp16" and half):
            raise BuildError(
                f"variant '{request.variant}': openvino has no '{request.precision}' artifact; "
                f"use one of {list(_PRECISIONS)}"
            )
        requirements = _requirements(request.target, opts)
        if request.precision == "int8":
            requirements = with_int8_flavour(requirements, model_path)
        integer = _integer_ops(source)
        _check_quantization(request, integer, model_path)
        _check_frontend_gaps(source, model_path.name)
        convertible, rewrite, rewritten = _for_openvino(model_path, source, request.workdir)
        model = _convert(convertible, source, model_path.name)
        notes = [*_quantization_notes(integer, rewrite), *rewritten]
        _save(model, out_dir, opts.compress_to_fp16)
        # Compile once here so an IR the CPU plugin rejects fails its build, not serving.
        try:
            compile_ir(out_dir / _XML, {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as exc:  # openvino raises plain RuntimeError subclasses
            msg = f"openvino cannot compile the IR of {model_path.name}: {openvino_message(exc)}"
            raise BuildError(msg) from exc
        if request.judge is not None and self.judged(opts):
            outputs = [o.name for o in request.contract.outputs]
            xml = out_dir / _XML
            notes.append(
                keep_in_f32(xml, request.judge, outputs, opts.float_layers, request.workdir).note
            )
        elif opts.inference_precision == "bf16" and _cpu_runs_bf16():
            # The plugin can lack a bf16 kernel the f32 compile did not need (an int8 source
            # with int8 inputs and outputs: "No suitable implementations"): found here, the
            # artifact fails its build rather than its every run.
            try:
                compile_ir(out_dir / _XML, {"INFERENCE_PRECISION_HINT": "bf16"})
            except Exception as exc:  # openvino raises plain RuntimeError subclasses
                msg = (
                    f"openvino cannot compile the IR of {model_path.name} in bf16 on this CPU: "
                    f"{openvino_message(exc)}"
                )
                raise BuildError(msg) from exc
        return BuildResult(
            files=[_XML, _BIN],
            runtime=OpenVinoSettings(
                xml=_XML,
                inference_precision=opts.inference_precision,
                weights="f16" if opts.compress_to_fp16 else "f32",
                performance_hint=opts.performance_hint,
                num_threads=opts.num_threads,
                num_streams=opts.num_streams,
                cpu_pinning=opts.cpu_pinning,
                static_shapes=opts.static_shapes,
            ),
            requirements=requirements,
            precision=request.precision,
            notes=notes,
            # The IR itself is portable, but a bf16 artifact run on a CPU without bf16 runs f32:
            # checking it there would measure something else, so it is not a cross-host check.
            portable=opts.inference_precision != "bf16",
        )


def _cpu_runs_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this host (elsewhere a bf16 hint runs
    f32, and a compile says nothing of the bf16 kernels)."""
    core = import_openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError
        raise BuildError(f"cannot read ONNX model {path}: {openvino_message(exc)}") from exc


def _integer_ops(model: onnx.ModelProto) -> dict[str, int]:
    """The main graph's integer-computing ops (compiler/core/quantized.py) by type."""
    return quantized_ops(Counter(n.op_type for n in model.graph.node))


def _quantization_notes(integer: dict[str, int], rewrite: QdqRewrite | None) -> list[str]:
    qdq = sum(integer.get(op, 0) for op in QDQ_OPS)
    notes = [f"{qdq} QuantizeLinear/DequantizeLinear nodes run as FakeQuantize"] if qdq else []
    if rewrite is not None:
        notes.append(rewrite.note())
    done = rewrite.rewritten if rewrite is not None else {}
    other = {op: n - done.get(op, 0) for op, n in integer.items() if op not in QDQ_OPS}
    other = {op: n for op, n in other.items() if n}
    if other:
        shown = ", ".join(f"{n} {op}" for op, n in sorted(other.items()))
        notes.append(f"the source's own integer ops converted as they are ({shown})")
    return notes


def _check_quantization(request: BuildRequest, integer: dict[str, int], path: Path) -> None:
    """Integer ops make an int8 artifact; the variant's precision must say so, both ways."""
    where = f"variant '{request.variant}' ({path.name})"
    shown = ", ".join(f"{n} {op}" for op, n in sorted(integer.items()))
    if integer and request.precision != "int8":  # OpenVINO would run them int8 regardless
        raise BuildError(
            f"{where}: the model has integer ops ({shown}) but the variant's precision is "
            f"{request.precision}; its int8 comes from a quantize or nncf pass, so that pass "
            "belongs in this variant's passes (or drop it)"
        )
    if request.precision == "int8" and not integer:
        raise BuildError(
            f"{where}: precision int8 but the model has no integer ops (QuantizeLinear/"
            "DequantizeLinear, ConvInteger, QLinear*...); add a quantize or nncf pass to this "
            "variant"
        )


@contextlib.contextmanager
def root_logger_kept() -> Iterator[None]:
    """The root logger's level, filters and handlers as they were before: OpenVINO's
    converter (2026.4, `ovc.logger.init_logger`) sets the root logger to ERROR and adds a
    filter to it for each `convert_model` and puts them back only when the conversion
    succeeds, so after a model it could not convert every warning of the process
    (serving's integrity fallback, the cache's notes) was dropped."""
    root = logging.getLogger()
    level, filters, handlers = root.level, list(root.filters), list(root.handlers)
    try:
        yield
    finally:
        root.setLevel(level)
        root.filters[:] = filters
        root.handlers[:] = handlers


def _check_frontend_gaps(source: onnx.ModelProto, shown: str) -> None:
    """NotApplicable where OpenVINO would compute the model otherwise than ONNX defines it
    and no exact rewrite helps (targets/frontend_gaps.py)."""
    why = openvino_gaps(source)
    if why:
        raise NotApplicable(
            f"openvino would compute {shown} otherwise than ONNX defines it: its ONNX frontend "
            f"{'; and '.join(why)} (targets/frontend_gaps.py); use the onnxruntime artifact "
            "for this model"
        )


def _for_openvino(
    model_path: Path, source: onnx.ModelProto, workdir: Path
) -> tuple[Path, QdqRewrite | None, list[str]]:
    """The model OpenVINO converts: the source, or a copy in `workdir` where it holds
    QOperator int8 (QLinearConv, com.microsoft QGemm...: rewritten in QDQ form,
    targets/openvino/qdq.py), outputs that pass an input through (left out: OpenVINO's
    frontend made a second input of such a tensor, and the runtime returns the feed), layout
    Transposes after an innermost-axis Concat (moved above it), If conditions of rank 2 or
    more (squeezed to scalars), Softmaxes before opset 13 on an axis not the last (spelled
    out), LRNs with a fractional bias (made bias 1), reductions whose axes OpenVINO ignores
    (spelled out) or AveragePools counting their padding with ceil_mode (the padding made
    explicit: rewrites.py). Also returns the notes on those rewrites."""
    inputs = {i.name for i in source.graph.input}
    passed = [o.name for o in source.graph.output if o.name in inputs]
    wide = wide_if_conditions(source)
    softmaxes, lrns = coerced_softmaxes(source), fractional_lrn_biases(source)
    reductions, pools = ignored_reduction_axes(source), padded_ceil_average_pools(source)
    if not (
        operator_form_ops(source)
        or passed
        or sinkable(source.graph)
        or wide
        or softmaxes
        or lrns
        or reductions
        or pools
    ):
        return model_path, None, []
    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # unreadable external data: the message names the file
        raise BuildError(f"cannot read ONNX model {model_path}: {openvino_message(exc)}") from exc
    rewrite = None
    if operator_form_ops(model):
        model, rewrite = to_qdq(model)
    notes = []
    sunk = sink_layout_transposes(model.graph)
    if sunk:
        notes.append(
            f"{sunk} layout Transpose(s) moved above an innermost-axis Concat (rewrites.py)"
        )
    squeezed = scalar_if_conditions(model, wide)  # the same graph, read before from the source
    if squeezed:
        notes.append(
            f"If condition(s) of rank 2 or more squeezed to a scalar, as OpenVINO's frontend "
            f"needs (rewrites.py): {', '.join(squeezed[:5])}"
        )
    exact = (
        (
            flatten_coerced_softmaxes,
            softmaxes,
            "Softmax(es) before opset 13 on an axis that is not the last spelled out as "
            "Flatten -> Softmax -> Reshape, as ONNX defined them; OpenVINO's frontend reads "
            "them as opset 13's (rewrites.py): {}",
        ),
        (
            unit_lrn_biases,
            lrns,
            "LRN(s) with a bias that is not a whole number rewritten to bias 1 and a scale, "
            "which OpenVINO computes right (rewrites.py): {}",
        ),
        (
            spelled_out_reductions,
            reductions,
            "ReduceL1 / ReduceLogSum / ReduceLogSumExp given axes spelled out from ReduceSum "
            "and ReduceMax, whose axes OpenVINO's frontend reads (it ignores theirs at opsets "
            "13-17: rewrites.py): {}",
        ),
        (
            explicit_pool_padding,
            pools,
            "AveragePool(s) counting their padding with ceil_mode given it as a Pad of zeros, "
            "counting what they cover of the padded input, which OpenVINO computes as ONNX "
            "Runtime does (rewrites.py): {}",
        ),
    )
    for apply, found, text in exact:
        if apply(model, found):
            notes.append(text.format(", ".join(found[:5])))
    kept = [o for o in model.graph.output if o.name not in inputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    path = Path(tempfile.mkdtemp(prefix="openvino-", dir=workdir)) / model_path.name
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        location=f"{path.name}.data",
        size_threshold=1024,
    )
    return path, rewrite, notes


def _convert(model_path: Path, source: onnx.ModelProto, shown: str = "") -> Any:
    """`model_path` as an OpenVINO model; failures name the source file `shown` (default:
    `model_path`'s name)."""
    shown = shown or Path(model_path).name
    ov = import_openvino()
    try:
        # each conversion re-initialises OpenVINO's telemetry and resets the root logger
        with telemetry_off(), root_logger_kept():
            return ov.convert_model(str(model_path))
    except Exception as exc:  # OpConversionFailure, GeneralFailure: not exported as one base
        msg = openvino_message(exc)
        ops = re.findall(r"No conversion rule found for operations: (.+)", str(exc))
        unsupported = {o.strip() for line in ops for o in line.split(",")}
        nodes = [
            n.name or n.output[0]
            for n in source.graph.node
            if f"{n.domain}.{n.op_type}" in unsupported or n.op_type in unsupported
        ]
        if nodes:
            # not applicable, not failed: nothing broke, OpenVINO has no rule for these ops
            raise NotApplicable(
                f"openvino cannot convert {shown}: {msg} (no conversion rule for "
                f"{', '.join(sorted(unsupported))}: nodes {nodes[:5]}); replace those ops "
                "before this variant, or use the onnxruntime artifact for this model"
            ) from None
        todo = "; fix the model for OpenVINO's ONNX frontend, or disable this variant"
        raise BuildError(f"openvino cannot convert {shown}: {msg}{todo}") from None


# a layer name OpenVINO made up ("Multiply_2634"): numbered by a counter of the process
_AUTO_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_\d+$")


def _stable_names(model: Any) -> None:
    """Rename made-up layer names by their position in the graph: OpenVINO numbers them from
    a process-wide counter, so the same model converted after other work in the process gave
    another model.xml (and another package digest). Inputs and outputs keep their names."""
    for i, op in enumerate(model.get_ordered_ops()):
        made_up = _AUTO_NAME.match(op.get_friendly_name())
        if made_up and op.get_type_name() not in ("Parameter", "Result"):
            op.set_friendly_name(f"{made_up.group(1)}_{i}")


def _save(model: Any, out_dir: Path, compress_to_fp16: bool) -> None:
    ov = import_openvino()
    _stable_names(model)
    # save_model compresses to f16 unless told otherwise; the option decides, explicitly.
    ov.save_model(model, str(out_dir / _XML), compress_to_fp16=compress_to_fp16)


def _requirements(target: str, opts: OpenVinoOptions) -> Requirements:
    arch = _ARCH[target]
    bf16 = opts.inference_precision == "bf16"
    if bf16 and arch not in _BF16_ISA:
        raise BuildError(f"openvino runs bf16 only on x86-64 CPUs; no bf16 artifact for '{target}'")
    version = opts.min_runtime_version or ".".join(_ov_version().split(".")[:2])
    return Requirements(
        arch=arch,
        isa=_BF16_ISA[arch] if bf16 else [],
        isa_any=list(BF16_FLAGS[arch]) if bf16 else [],
        runtime="openvino",
        min_runtime_version=version,
        meant_for=meant_for(arch, bf16=bf16),
    )
