"""What the TensorRT tests describe rather than probe: GPUs, hosts, compatibility records, the
tiny MLP's contract, and a build of it in a fresh folder."""

from __future__ import annotations

from pathlib import Path

import onnx

from compiler.core.contract import Contract, DimRange
from compiler.core.host import GpuInfo, HostInfo
from compiler.pipeline.interface import extract_contract
from targets.base import BuildRequest, BuildResult
from targets.tensorrt.backend import TensorRTBackend
from targets.tensorrt.compat import CompatibilityRecord
from targets.tensorrt.options import TensorRTOptions
from tests.models import save, tiny_mlp

__all__ = ["A10", "BATCH", "H100", "H200", "T4", "build", "host", "mlp_contract", "record"]

H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
H200 = GpuInfo(name="NVIDIA H200", compute_capability="9.0")
T4 = GpuInfo(name="Tesla T4", compute_capability="7.5")
A10 = GpuInfo(name="NVIDIA A10", compute_capability="8.6")
BATCH = {"batch": DimRange(min=1, opt=4, max=16)}


def host(gpu: GpuInfo | None = H100, trt: str | None = "10.16.1.11") -> HostInfo:
    """A described host (data, not a probe): which GPU and TensorRT version it has."""
    return HostInfo(
        arch="x86_64", cpu_model="test", cpu_count=2, isa=[], os="Linux",
        gpus=[gpu] if gpu else [], runtimes={"tensorrt": trt} if trt else {},
    )  # fmt: skip


def record(**kw: object) -> CompatibilityRecord:
    base: dict[str, object] = dict(
        tensorrt_version="10.16.1.11", gpu_name=H100.name, compute_capability="9.0",
        precision="fp16",
    )  # fmt: skip
    base.update(kw)
    return CompatibilityRecord.model_validate(base)


def mlp_contract(dims: dict[str, DimRange] | None = None) -> Contract:
    return extract_contract(tiny_mlp(), BATCH if dims is None else dims)


def build(
    tmp: Path, model: onnx.ModelProto | None = None, variant: str = "fp16", **opts: object
) -> tuple[BuildResult, Path]:
    """The tiny MLP (or `model`) built for the gpu target. `variant` is the variant's precision
    (int8: a QDQ model); the options' `precision` (the builder's float mode) defaults to it for
    fp16 and bf16, as a trt-fp16 variant sets it."""
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    path = save(model or tiny_mlp(), src / "model.onnx")
    out = tmp / "out"
    out.mkdir(exist_ok=True)
    if variant in ("fp16", "bf16"):
        opts.setdefault("precision", variant)
    req = BuildRequest(
        target="gpu", variant=f"trt-{variant}", precision=variant,
        options=TensorRTOptions.model_validate(opts), contract=mlp_contract(), workdir=tmp,
    )  # fmt: skip
    return TensorRTBackend().build(path, req, out), out
