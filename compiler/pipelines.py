"""Default pipelines per target, as data: target -> pipeline name -> variants.

A variant is the passes after normalize plus a backend compile. Identical pass prefixes
across variants are one node in the DAG, so the shared prefix runs once. Backends that are
missing on a host are recorded as skipped there, so default pipelines may name all of them.
"""

from __future__ import annotations

from collections.abc import Callable

from compiler.config import VariantConfig
from passes.fuse import FuseConfig
from passes.quantize import QuantizeConfig
from targets.onnxruntime import OnnxRuntimeOptions
from targets.tensorrt import TensorRTOptions

__all__ = ["PIPELINES"]


def _ort() -> VariantConfig:
    return VariantConfig(passes=[FuseConfig(level="basic")], compile=OnnxRuntimeOptions())


def default_cpu() -> dict[str, VariantConfig]:
    return {"ort-fp32": _ort()}


def default_arm() -> dict[str, VariantConfig]:
    return {"ort-fp32": _ort()}


def default_gpu() -> dict[str, VariantConfig]:
    # TensorRT: an engine where the build host has TensorRT and a GPU, else a deferred
    # build spec the serving host completes. int8 is explicit (symmetric QDQ) quantization.
    return {
        "trt-fp32": VariantConfig(compile=TensorRTOptions(), precision="fp32"),
        "trt-fp16": VariantConfig(compile=TensorRTOptions(), precision="fp16"),
        "trt-int8": VariantConfig(
            passes=[QuantizeConfig(mode="static")], compile=TensorRTOptions(), precision="int8"
        ),
    }


PIPELINES: dict[str, dict[str, Callable[[], dict[str, VariantConfig]]]] = {
    "cpu": {"default": default_cpu},
    "arm": {"default": default_arm},
    "gpu": {"default": default_gpu},
}
