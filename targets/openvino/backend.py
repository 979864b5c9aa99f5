"""OpenVINO backend: one IR (.xml + .bin) for `cpu` (x86-64) and `arm` (aarch64).

The IR is hardware-independent; the CPU plugin specializes it when the serving host compiles
it. What the host would pick by itself varies (bf16 on AVX-512 Xeons, f16 on ARM), so the
artifact records one inference precision and the runner compiles exactly that, or refuses.

int8 comes two ways: NNCF post-training quantization of the converted model on the
calibration feeds (`int8_source="nncf"`), or the pipeline's QDQ model, which OpenVINO turns
into FakeQuantize and runs in int8 (`int8_source="qdq"`). With `accuracy_control`, an NNCF
artifact whose top-1 agreement with the fp32 ONNX Runtime reference misses `min_agreement`
is quantized again with `nncf.quantize_with_accuracy_control`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from pydantic import BaseModel, ConfigDict, Field

from compiler.core.contract import Contract
from compiler.core.errors import BackendUnavailable, BuildError
from compiler.core.host import Requirements
from compiler.core.settings import OpenVinoSettings, RuntimeSettings, settings_to_json
from targets.base import Availability, Backend, BackendOptions, BuildRequest, BuildResult, Runner

__all__ = ["IgnoredScopeOptions", "OpenVinoBackend", "OpenVinoOptions", "OpenVinoRunner"]

_ARCH = {"cpu": "x86_64", "arm": "aarch64"}
_INSTALL = "pip install 'compile-pkg[openvino]'"
_XML, _BIN = "model.xml", "model.bin"
# precision of the artifact -> INFERENCE_PRECISION_HINT the runner compiles with. int8
# artifacts run f32 outside their quantized ops, so only those ops change numerics.
_INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# The CPU plugin runs bf16 only with AVX-512 (core) or AVX2-VNNI-2; elsewhere it silently
# falls back to f32. The loader needs a flag list, so bf16 artifacts ask for AVX-512.
_BF16_ISA = {"x86_64": ["avx512bw", "avx512f", "avx512vl"]}
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# line prefixes of OpenVINO messages that locate the C++ check, not the problem
_NOISE = ("Check '", "FrontEnd API failed with", "Summary:", "Exception from src/", "[ GENERAL")


class IgnoredScopeOptions(BaseModel):
    """Nodes NNCF leaves in float: OpenVINO node names, regex patterns, or op types."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    names: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()


class OpenVinoOptions(BackendOptions):
    backend: Literal["openvino"] = "openvino"
    # what the CPU plugin computes float ops in (int8 comes from a quantize/nncf pass)
    inference_precision: Literal["f32", "bf16"] = "f32"
    # IR weights stored as f16 (half the size; decompressed to f32 at load). Recorded in the
    # runtime so the manifest says what was shipped.
    compress_to_fp16: bool = False
    # int8 only
    int8_source: Literal["nncf", "qdq"] = "nncf"  # qdq: the input already has Q/DQ nodes
    model_type: Literal["auto", "cnn", "transformer"] = "auto"  # auto: attention => transformer
    preset: Literal["performance", "mixed"] = "performance"
    subset_size: int = Field(default=300, ge=1)
    fast_bias_correction: bool = True
    ignored_scope: IgnoredScopeOptions = Field(default_factory=IgnoredScopeOptions)
    accuracy_control: bool = False
    min_agreement: float = Field(default=0.9, ge=0, le=1, description="top-1 vs fp32 reference")
    max_drop: float = Field(default=0.01, ge=0, le=1, description="for accuracy control")
    # applied on the serving host when the IR is compiled
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    num_threads: int = Field(default=0, ge=0, description="0: OpenVINO's default")
    num_streams: int = Field(default=0, ge=0, description="0: the performance hint decides")
    # OpenVINO pins its threads to cores by default on Linux; on a host shared with other
    # processes that made p50 8-13x worse (docs/openvino.md). Pin only on a dedicated host.
    cpu_pinning: bool = False
    min_runtime_version: str = ""  # "": the year.minor of the OpenVINO that built the IR

    def compute_precision(self) -> str:
        return {"f32": "fp32", "bf16": "bf16"}[self.inference_precision]


def _ov_version() -> str:
    return importlib.metadata.version("openvino")


class OpenVinoBackend(Backend):
    name = "openvino"
    version = "1"
    targets = frozenset({"cpu", "arm"})
    options_cls = OpenVinoOptions
    uses_calibration = True  # NNCF int8 reads request.calibration()

    @classmethod
    def availability(cls, target: str) -> Availability:
        if target not in cls.targets:
            return Availability(ok=False, reason=f"no openvino artifact for target '{target}'")
        for module in ("openvino", "nncf"):
            if importlib.util.find_spec(module) is None:
                return Availability(ok=False, reason=f"{module} is not installed", install=_INSTALL)
        return Availability(ok=True)

    @classmethod
    def runtime_availability(cls) -> Availability:
        try:
            import openvino  # noqa: F401
        except ImportError as exc:
            return Availability(ok=False, reason=f"cannot import openvino: {exc}", install=_INSTALL)
        return Availability(ok=True)

    @classmethod
    def library_versions(cls) -> dict[str, str]:
        versions = {"openvino": _ov_version()}
        if importlib.util.find_spec("nncf") is not None:
            versions["nncf"] = importlib.metadata.version("nncf")
        return versions

    def build(self, model_path: Path, request: BuildRequest, out_dir: Path) -> BuildResult:
        opts = request.options
        assert isinstance(opts, OpenVinoOptions)
        if request.target not in self.targets:
            raise BuildError(f"openvino builds for {sorted(self.targets)}, not '{request.target}'")
        if request.precision not in _INFERENCE_PRECISION:
            raise BuildError(
                f"variant '{request.variant}': openvino has no '{request.precision}' artifact; "
                f"use one of {sorted(_INFERENCE_PRECISION)}"
            )
        requirements = _requirements(request.target, request.precision, opts)
        source = _load_onnx(model_path)
        qdq_nodes = _count_qdq(source)
        _check_int8_source(request, opts, qdq_nodes, model_path)
        model = _convert(model_path, source)
        notes: list[str] = []
        int8_method = ""
        if request.precision == "int8" and opts.int8_source == "qdq":
            int8_method = "qdq"
            notes.append(f"{qdq_nodes} QuantizeLinear/DequantizeLinear nodes run as FakeQuantize")
        elif request.precision == "int8":
            model, int8_method, notes = _nncf_int8(model, model_path, request, opts)
        if int8_method:
            notes.append(f"int8 method: {int8_method}")
        _save(model, out_dir, opts.compress_to_fp16)
        # Compile once here so an IR the CPU plugin rejects fails its build, not serving.
        try:
            _compile(out_dir / _XML, {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as exc:  # openvino raises plain RuntimeError subclasses
            msg = f"openvino cannot compile the IR of {model_path.name}: {_short(exc)}"
            raise BuildError(msg) from exc
        return BuildResult(
            files=[_XML, _BIN],
            runtime=OpenVinoSettings(
                xml=_XML,
                inference_precision=_INFERENCE_PRECISION[request.precision],  # type: ignore[arg-type]
                weights="f16" if opts.compress_to_fp16 else "f32",
                performance_hint=opts.performance_hint,
                num_threads=opts.num_threads,
                num_streams=opts.num_streams,
                cpu_pinning=opts.cpu_pinning,
            ),
            requirements=requirements,
            precision=request.precision,
            notes=notes,
            # The IR itself is portable, but a bf16 artifact run on a CPU without bf16 runs f32:
            # checking it there would measure something else, so it is not a cross-host check.
            portable=request.precision != "bf16",
        )

    @classmethod
    def runner(
        cls,
        artifact_dir: Path,
        runtime: RuntimeSettings,
        contract: Contract,
        *,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> OpenVinoRunner:
        plain = settings_to_json(runtime)
        return OpenVinoRunner(artifact_dir, plain, contract, threads, cache_dir)


def _short(exc: BaseException, limit: int = 400, lines: int = 4) -> str:
    """The lines of an OpenVINO message that say what failed, without its C++ check trail."""
    kept = []
    for line in str(exc).strip().splitlines():
        line = line.strip(" -\t")
        if line and not line.startswith(_NOISE) and not re.match(r"^\S+\.cpp:\d+", line):
            kept.append(line)
    msg = " ".join(kept[:lines]) or type(exc).__name__
    return msg[:limit] + ("..." if len(msg) > limit else "")


def _load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError
        raise BuildError(f"cannot read ONNX model {path}: {_short(exc)}") from exc


def _count_qdq(model: onnx.ModelProto) -> int:
    return sum(n.op_type in _QDQ_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node)


def _check_int8_source(
    request: BuildRequest, opts: OpenVinoOptions, qdq_nodes: int, path: Path
) -> None:
    where = f"variant '{request.variant}' ({path.name})"
    if request.precision != "int8":
        if qdq_nodes:  # OpenVINO would run them int8 under another precision's name
            raise BuildError(
                f"{where}: the model has {qdq_nodes} QuantizeLinear/DequantizeLinear nodes but "
                f"the variant's precision is {request.precision}; set precision: int8"
            )
        return
    if opts.int8_source == "qdq" and not qdq_nodes:
        raise BuildError(
            f"{where}: compile.int8_source is 'qdq' but the model has no QuantizeLinear/"
            f"DequantizeLinear nodes; add the quantize pass to this variant, or use 'nncf'"
        )
    if opts.int8_source == "nncf" and qdq_nodes:
        raise BuildError(
            f"{where}: the model is already quantized ({qdq_nodes} Q/DQ nodes) and NNCF would "
            f"quantize it again; set compile.int8_source: qdq, or drop the quantize pass"
        )


def _convert(model_path: Path, source: onnx.ModelProto) -> Any:
    import openvino as ov

    try:
        return ov.convert_model(str(model_path))
    except Exception as exc:  # OpConversionFailure, GeneralFailure: not exported as one base
        msg = _short(exc)
        ops = re.findall(r"No conversion rule found for operations: (.+)", str(exc))
        unsupported = {o.strip() for line in ops for o in line.split(",")}
        nodes = [
            n.name or n.output[0]
            for n in source.graph.node
            if f"{n.domain}.{n.op_type}" in unsupported or n.op_type in unsupported
        ]
        todo = (
            f" (nodes {nodes[:5]}); replace those ops before this variant, or disable it"
            if nodes
            else "; fix the model for OpenVINO's ONNX frontend, or disable this variant"
        )
        raise BuildError(f"openvino cannot convert {model_path.name}: {msg}{todo}") from None


def _save(model: Any, out_dir: Path, compress_to_fp16: bool) -> None:
    import openvino as ov

    # save_model compresses to f16 unless told otherwise; the option decides, explicitly.
    ov.save_model(model, str(out_dir / _XML), compress_to_fp16=compress_to_fp16)


def _compile(model: Any, config: dict[str, Any]) -> Any:
    import openvino as ov

    core = ov.Core()
    if isinstance(model, Path):
        model = core.read_model(str(model))
    return core.compile_model(model, "CPU", config)


def _requirements(target: str, precision: str, opts: OpenVinoOptions) -> Requirements:
    arch = _ARCH[target]
    if precision == "bf16" and arch not in _BF16_ISA:
        raise BuildError(f"openvino runs bf16 only on x86-64 CPUs; no bf16 artifact for '{target}'")
    version = opts.min_runtime_version or ".".join(_ov_version().split(".")[:2])
    return Requirements(
        arch=arch,
        isa=_BF16_ISA[arch] if precision == "bf16" else [],
        runtime="openvino",
        min_runtime_version=version,
    )


def _nncf_int8(
    model: Any, model_path: Path, request: BuildRequest, opts: OpenVinoOptions
) -> tuple[Any, str, list[str]]:
    """Post-training quantization on the calibration feeds; re-done under accuracy control
    when asked and the plain result disagrees with the fp32 reference too often."""
    import nncf

    feeds = request.calibration()
    if not feeds:
        raise BuildError(
            f"variant '{request.variant}': NNCF int8 needs calibration data and got none"
        )
    model_type = _model_type(model, opts.model_type)
    kwargs: dict[str, Any] = {
        "preset": nncf.QuantizationPreset(opts.preset),
        "target_device": nncf.TargetDevice.CPU,
        "subset_size": min(opts.subset_size, len(feeds)),
        "fast_bias_correction": opts.fast_bias_correction,
        "model_type": nncf.ModelType.TRANSFORMER if model_type == "transformer" else None,
        "ignored_scope": nncf.IgnoredScope(
            names=list(opts.ignored_scope.names),
            patterns=list(opts.ignored_scope.patterns),
            types=list(opts.ignored_scope.types),
        ),
    }
    notes = [
        f"NNCF {importlib.metadata.version('nncf')} int8, model type {model_type}, "
        f"{kwargs['subset_size']} {request.calibration_source} calibration samples"
    ]
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), **kwargs)
    except Exception as exc:  # nncf.ValidationError for bad ignored scopes, and others
        msg = f"variant '{request.variant}': NNCF quantization failed: {_short(exc)}"
        raise BuildError(msg) from exc
    if not opts.accuracy_control:
        return quantized, "nncf", notes
    names = [o.name for o in request.contract.outputs]
    refs = _reference_outputs(model_path, feeds, names)
    before = _score(quantized, feeds, refs, names)
    notes.append(f"plain int8 top-1 agreement with fp32 reference: {before:.4f}")
    if before >= opts.min_agreement:
        return quantized, "nncf", notes
    try:
        controlled = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(feeds),
            nncf.Dataset(list(zip(feeds, refs, strict=True))),
            lambda compiled, data: _agreement_score(compiled, data, names),
            max_drop=opts.max_drop,
            **kwargs,
        )
    except Exception as exc:
        raise BuildError(
            f"variant '{request.variant}': NNCF accuracy-controlled quantization failed: "
            f"{_short(exc)}"
        ) from exc
    after = _score(controlled, feeds, refs, names)
    notes.append(
        f"below min_agreement {opts.min_agreement}: re-quantized with accuracy control "
        f"(max_drop {opts.max_drop}), agreement now {after:.4f}"
    )
    return controlled, "nncf-accuracy-control", notes


def _model_type(model: Any, option: str) -> str:
    if option != "auto":
        return option
    return "transformer" if _has_attention(model) else "cnn"


def _has_attention(model: Any) -> bool:
    """Attention: OpenVINO's fused ScaledDotProductAttention, or a Softmax reached from a
    MatMul of two activations (no constant weight)."""

    def constant(node: Any) -> bool:
        while node.get_type_name() == "Convert":
            node = node.input_value(0).get_node()
        return bool(node.get_type_name() == "Constant")

    for op in model.get_ordered_ops():
        if op.get_type_name() == "ScaledDotProductAttention":
            return True
        if op.get_type_name() != "Softmax":
            continue
        stack: list[Any] = [op.input_value(0).get_node()]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen or len(seen) > 32:
                continue
            seen.add(id(node))
            if node.get_type_name() == "MatMul":
                if not any(constant(v.get_node()) for v in node.input_values()):
                    return True
                continue
            if node.get_type_name() in ("Add", "Multiply", "Divide", "Reshape", "Transpose"):
                stack.extend(v.get_node() for v in node.input_values())
    return False


def _reference_outputs(
    model_path: Path, feeds: list[dict[str, np.ndarray]], names: list[str]
) -> list[dict[str, np.ndarray]]:
    from targets.onnxruntime.backend import reference_session

    session = reference_session(model_path)
    return [dict(zip(names, session.run(names, f), strict=True)) for f in feeds]


def _agreement(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """How well `got` matches `ref`, in [0, 1]: for outputs with a class axis (last dim > 1)
    the fraction of positions whose argmax agrees, else the cosine similarity; then the mean.
    """
    scores = []
    for name, r in ref.items():
        r, g = np.asarray(r, dtype=np.float64), np.asarray(got[name], dtype=np.float64)
        if r.ndim >= 1 and r.shape[-1] > 1:
            scores.append(float(np.mean(r.argmax(-1) == g.argmax(-1))))
        else:
            denom = float(np.linalg.norm(r) * np.linalg.norm(g)) or 1.0
            scores.append(max(0.0, float(np.dot(r.ravel(), g.ravel())) / denom))
    return float(np.mean(scores)) if scores else 1.0


def _agreement_score(
    compiled: Any,
    data: Iterable[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    names: list[str],
) -> tuple[float, list[float]]:
    """NNCF's validation_fn: mean agreement with the reference, and each sample's."""
    ports = {name: compiled.output(name) for name in names}
    per_item = []
    for feeds, ref in data:
        result = compiled(feeds)
        per_item.append(_agreement(ref, {n: result[p] for n, p in ports.items()}))
    return (float(np.mean(per_item)) if per_item else 1.0), per_item


def _score(
    model: Any,
    feeds: list[dict[str, np.ndarray]],
    refs: list[dict[str, np.ndarray]],
    names: list[str],
) -> float:
    compiled = _compile(model, {"INFERENCE_PRECISION_HINT": "f32"})
    return _agreement_score(compiled, zip(feeds, refs, strict=True), names)[0]


class OpenVinoRunner(Runner):
    """Compiles the IR for the CPU with the artifact's inference precision, no other."""

    def __init__(
        self,
        artifact_dir: Path,
        runtime: dict[str, Any],
        contract: Contract,
        threads: int | None,
        cache_dir: Path | None,
    ) -> None:
        super().__init__(contract)
        self.xml = artifact_dir / runtime["xml"]
        self.runtime = runtime
        self.threads = runtime.get("num_threads", 0) if threads is None else threads
        self.cache_dir = cache_dir
        self.compiled: Any = None
        self.request: Any = None
        self.ports: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": self.runtime["inference_precision"],
            "PERFORMANCE_HINT": self.runtime.get("performance_hint", "LATENCY"),
            "ENABLE_CPU_PINNING": bool(self.runtime.get("cpu_pinning", False)),
        }
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.runtime.get("num_streams"):
            cfg["NUM_STREAMS"] = int(self.runtime["num_streams"])
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            cfg["CACHE_DIR"] = str(self.cache_dir)
        return cfg

    def load(self) -> None:
        try:
            compiled = _compile(self.xml, self.config())
        except Exception as exc:
            raise BackendUnavailable(
                "openvino", f"cannot compile {self.xml}: {_short(exc)}"
            ) from exc
        want = self.runtime["inference_precision"]
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != want:
            raise BackendUnavailable(
                "openvino",
                f"this CPU cannot run {self.xml.parent.name} in {want}: OpenVINO compiled it "
                f"as {got}; pick an artifact of another precision for this host",
            )
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.ports = {o.name: compiled.output(o.name) for o in self.contract.outputs}

    def close(self) -> None:
        self.request = None
        self.compiled = None

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = self.request.infer(feeds)
        return {name: np.array(result[port], copy=True) for name, port in self.ports.items()}

    def describe(self) -> dict[str, Any]:
        c = self.compiled
        if c is None:
            return {"runtime": f"openvino {_ov_version()}", "device": "CPU"}
        return {
            "runtime": f"openvino {_ov_version()}",
            "device": f"CPU ({', '.join(c.get_property('EXECUTION_DEVICES'))})",
            "precision": c.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
            "threads": int(c.get_property("INFERENCE_NUM_THREADS")),
            "streams": int(c.get_property("NUM_STREAMS")),
            "performance_hint": str(c.get_property("PERFORMANCE_HINT")),
            "cpu_pinning": bool(c.get_property("ENABLE_CPU_PINNING")),
            "loaded_from_cache": bool(c.get_property("LOADED_FROM_CACHE")),
        }
