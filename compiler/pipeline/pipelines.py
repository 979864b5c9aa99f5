"""Default pipelines per target, as data: target -> pipeline name -> variants.

A variant is the passes after normalize plus a backend compile; its precision follows from
them (int8 from a quantize or nncf pass, fp16 from the fp16 pass or TensorRT's `precision`,
bf16 from OpenVINO's `inference_precision`), so no variant here declares one. Identical pass
prefixes across variants are one node in the DAG, so the shared prefix runs once. Backends
that are missing on a host are recorded as skipped there, so default pipelines may name all
of them. `none` is no variants: a config file's `pipeline: none` builds only its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from compiler.pipeline.variant import VariantConfig
from passes.accuracy import AccuracyAwareConfig
from passes.fp16 import Fp16Config
from passes.fuse import FuseConfig
from passes.nncf import NncfConfig
from passes.quantize import QuantizeConfig
from passes.registry import AnyPassConfig
from passes.simplify import SimplifyConfig
from targets.onnxruntime.backend import OnnxRuntimeOptions
from targets.openvino.backend import OpenVinoOptions
from targets.tensorrt.options import TensorRTOptions
from targets.tvm.backend import TvmOptions

__all__ = ["PIPELINES"]


def _ort() -> VariantConfig:
    return VariantConfig(
        passes=[SimplifyConfig(), FuseConfig(level="basic")], compile=OnnxRuntimeOptions()
    )


def _ort_int8(reduce_range: bool = False) -> VariantConfig:
    # simplify first: the shared prefix with ort-fp32, and a folded graph to calibrate.
    # No fuse before quantize: fused com.microsoft ops are not quantizable (docs/passes.md).
    # The target's int8 types (cpu: u8s8, meant for VNNI/AMX hosts; arm: s8s8, what ONNX
    # Runtime fuses into its int8 kernels on Arm). `reduce_range`: 7-bit weights, the flavour
    # meant for x86 hosts without VNNI, whose u8s8 kernels saturate (docs/hosts.md).
    quantize = QuantizeConfig(
        reduce_range=reduce_range, accuracy_aware=AccuracyAwareConfig(enabled="auto")
    )
    return VariantConfig(passes=[SimplifyConfig(), quantize], compile=OnnxRuntimeOptions())


def _ort_int8_tf() -> VariantConfig:
    # Transformers: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization,
    # Gelu), then dynamic int8 (QAttention, MatMulInteger) gated by the accuracy loop; fused
    # ops are quantizable in dynamic mode. `require`: on a graph without attention the
    # variant is skipped with the reason before any work (docs/passes.md). No simplify:
    # onnxsim turns MatMul+Add into Reshape-Gemm-Reshape, which ORT's Attention fusion does
    # not match (perf/models.py bert: Attention 6 without it, 0 after it); fuse folds itself.
    fuse = FuseConfig(level="basic", transformer="require")
    quantize = QuantizeConfig(mode="dynamic", accuracy_aware=AccuracyAwareConfig(enabled="auto"))
    return VariantConfig(passes=[fuse, quantize], compile=OnnxRuntimeOptions())


def _ov(inference_precision: Literal["f32", "bf16"] = "f32", int8: bool = False) -> VariantConfig:
    # No fuse pass: OpenVINO fuses on its own and cannot read ONNX Runtime's com.microsoft ops.
    # int8 is the nncf pass's QDQ model, which OpenVINO runs as int8 (docs/passes.md); simplify
    # first folds BatchNormalization into Conv as OpenVINO's converter does, which NNCF's ONNX
    # backend does not (unfolded: top-1 0.75 vs 1.0 on examples/tiny_cnn.onnx).
    return VariantConfig(
        passes=[SimplifyConfig(), NncfConfig()] if int8 else [],
        compile=OpenVinoOptions(inference_precision=inference_precision),
    )


def _tvm(fp16: bool = False, tuning_trials: int = 0) -> VariantConfig:
    # simplify (shared prefix with ort) but no fuse: TVM cannot import com.microsoft ops.
    # fp16 is the fp16 pass's ONNX model, imported as is (docs/tvm.md).
    passes: list[AnyPassConfig] = [SimplifyConfig(), Fp16Config()] if fp16 else [SimplifyConfig()]
    return VariantConfig(passes=passes, compile=TvmOptions(tuning_trials=tuning_trials))


def default_cpu() -> dict[str, VariantConfig]:
    return {
        "ort-fp32": _ort(),
        "ort-int8": _ort_int8(),
        "ort-int8-rr": _ort_int8(reduce_range=True),
        "ov-f32": _ov(),
        "ov-bf16": _ov(inference_precision="bf16"),
        "ov-int8": _ov(int8=True),
    }


def default_arm() -> dict[str, VariantConfig]:
    return {
        "ort-fp32": _ort(),
        "ort-int8": _ort_int8(),
        "ov-f32": _ov(),
        "ov-int8": _ov(int8=True),
    }


# Untuned TVM CPU code ran 7-84x slower than ONNX Runtime on real models and took up to a
# minute to build and 44 s to verify, and no selection ever served it: it is opt-in.
# `with-tvm` adds it as is; `tvm-tuned` (cpu: tuning measures on the build host) adds it with
# a MetaSchedule budget (compile.tuning_trials / tuning_seconds).
def with_tvm_cpu() -> dict[str, VariantConfig]:
    return {**default_cpu(), "tvm-fp32": _tvm()}


def with_tvm_arm() -> dict[str, VariantConfig]:
    return {**default_arm(), "tvm-fp32": _tvm()}


# The transformer variant is opt-in (`pipeline: transformer`): on the perf BERT (seq 128) it
# ran 2.24x the reference vs ort-int8's 2.86x in one build, with 10x its output error
# (QAttention: hidden rel. L2 0.109 vs 0.011), and ~20 s more build; docs/passes.md.
def transformer_cpu() -> dict[str, VariantConfig]:
    return {**default_cpu(), "ort-int8-tf": _ort_int8_tf()}


def tvm_tuned_cpu() -> dict[str, VariantConfig]:
    return {**default_cpu(), "tvm-fp32": _tvm(tuning_trials=256)}


def default_gpu() -> dict[str, VariantConfig]:
    # TensorRT: an engine where the build host has TensorRT and a GPU, else a deferred
    # build spec the serving host completes. int8 is explicit (symmetric QDQ) quantization.
    return {
        "trt-fp32": VariantConfig(compile=TensorRTOptions()),
        "trt-fp16": VariantConfig(compile=TensorRTOptions(precision="fp16")),
        "trt-int8": VariantConfig(
            passes=[QuantizeConfig(mode="static")], compile=TensorRTOptions()
        ),
        "tvm-fp32": _tvm(),
        "tvm-fp16": _tvm(fp16=True),
    }


def no_pipeline() -> dict[str, VariantConfig]:
    """`pipeline: none`: only the variants the config file lists."""
    return {}


PIPELINES: dict[str, dict[str, Callable[[], dict[str, VariantConfig]]]] = {
    "cpu": {
        "default": default_cpu,
        "with-tvm": with_tvm_cpu,
        "tvm-tuned": tvm_tuned_cpu,
        "transformer": transformer_cpu,
        "none": no_pipeline,
    },
    "arm": {"default": default_arm, "with-tvm": with_tvm_arm, "none": no_pipeline},
    "gpu": {"default": default_gpu, "none": no_pipeline},
}
