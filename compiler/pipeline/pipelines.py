"""Default pipelines per target, as data: target -> pipeline name -> variants.

A variant is the passes after normalize plus a backend compile. Identical pass prefixes
across variants are one node in the DAG, so the shared prefix runs once. Backends that are
missing on a host are recorded as skipped there, so default pipelines may name all of them.
"""

from __future__ import annotations

from collections.abc import Callable

from compiler.pipeline.config import VariantConfig
from passes.accuracy import AccuracyAwareConfig
from passes.fp16 import Fp16Config
from passes.fuse import FuseConfig
from passes.quantize import QuantizeConfig
from passes.simplify import SimplifyConfig
from targets.onnxruntime.backend import OnnxRuntimeOptions
from targets.openvino.backend import OpenVinoOptions
from targets.tensorrt import TensorRTOptions
from targets.tvm import TvmOptions

__all__ = ["PIPELINES"]


def _ort() -> VariantConfig:
    return VariantConfig(
        passes=[SimplifyConfig(), FuseConfig(level="basic")], compile=OnnxRuntimeOptions()
    )


def _ort_int8() -> VariantConfig:
    # simplify first: the shared prefix with ort-fp32, and a folded graph to calibrate.
    # No fuse before quantize: fused com.microsoft ops are not quantizable (docs/passes.md).
    quantize = QuantizeConfig(accuracy_aware=AccuracyAwareConfig(enabled=True))
    return VariantConfig(
        passes=[SimplifyConfig(), quantize], compile=OnnxRuntimeOptions(), precision="int8"
    )


def _ov() -> OpenVinoOptions:
    # No fuse pass: OpenVINO fuses on its own and cannot read ONNX Runtime's com.microsoft ops.
    # int8 is NNCF on the converted model; QDQ input is the alternative (docs/openvino.md).
    return OpenVinoOptions()


def _tvm(fp16: bool = False) -> VariantConfig:
    # simplify (shared prefix with ort) but no fuse: TVM cannot import com.microsoft ops.
    # fp16 is the fp16 pass's ONNX model, imported as is (docs/tvm.md).
    if fp16:
        return VariantConfig(
            passes=[SimplifyConfig(), Fp16Config()], compile=TvmOptions(), precision="fp16"
        )
    return VariantConfig(passes=[SimplifyConfig()], compile=TvmOptions(), precision="fp32")


def default_cpu() -> dict[str, VariantConfig]:
    return {
        "ort-fp32": _ort(),
        "ort-int8": _ort_int8(),
        "ov-f32": VariantConfig(compile=_ov(), precision="fp32"),
        "ov-bf16": VariantConfig(compile=_ov(), precision="bf16"),
        "ov-int8": VariantConfig(compile=_ov(), precision="int8"),
        "tvm-fp32": _tvm(),
    }


def default_arm() -> dict[str, VariantConfig]:
    return {
        "ort-fp32": _ort(),
        "ort-int8": _ort_int8(),
        "ov-f32": VariantConfig(compile=_ov(), precision="fp32"),
        "ov-int8": VariantConfig(compile=_ov(), precision="int8"),
        "tvm-fp32": _tvm(),
    }


def default_gpu() -> dict[str, VariantConfig]:
    # TensorRT: an engine where the build host has TensorRT and a GPU, else a deferred
    # build spec the serving host completes. int8 is explicit (symmetric QDQ) quantization.
    return {
        "trt-fp32": VariantConfig(compile=TensorRTOptions(), precision="fp32"),
        "trt-fp16": VariantConfig(compile=TensorRTOptions(), precision="fp16"),
        "trt-int8": VariantConfig(
            passes=[QuantizeConfig(mode="static")], compile=TensorRTOptions(), precision="int8"
        ),
        "tvm-fp32": _tvm(),
        "tvm-fp16": _tvm(fp16=True),
    }


PIPELINES: dict[str, dict[str, Callable[[], dict[str, VariantConfig]]]] = {
    "cpu": {"default": default_cpu},
    "arm": {"default": default_arm},
    "gpu": {"default": default_gpu},
}
