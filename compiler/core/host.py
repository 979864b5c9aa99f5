"""Probe the host (CPU architecture and ISA, NVIDIA GPUs, importable runtimes) and match
an artifact's hardware requirements against it.

The probe never imports a heavy runtime: it asks `importlib` whether the module exists and
reads its version from package metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from compiler.core.isa import Int8Flavour, IsaClass
from compiler.core.isa import isa_class as classify_isa

__all__ = [
    "INTERESTING_FLAGS",
    "GpuInfo",
    "HostInfo",
    "IsaClass",
    "Mismatch",
    "Requirements",
    "probe_host",
    "RUNTIME_MODULES",
    "mig_devices",
    "visible_gpus",
]

# runtime name -> (import name, distribution names to read the version from)
RUNTIME_MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    "openvino": ("openvino", ("openvino",)),
    "tvm": ("tvm", ("apache-tvm",)),
    "tensorrt": (
        "tensorrt",
        (
            "tensorrt",
            "tensorrt-cu13",
            "tensorrt-cu12",
            "tensorrt-cu11",
            "tensorrt_cu13_bindings",
            "tensorrt_cu12_bindings",
        ),
    ),
}

# CPU flags worth recording: the ones kernels dispatch on.
INTERESTING_FLAGS = {
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # aarch64 (/proc/cpuinfo "Features")
    "asimd",
    "asimddp",
    "fphp",
    "asimdhp",
    "sve",
    "sve2",
    "i8mm",
    "bf16",
    "sme",
}


class GpuInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    compute_capability: str  # "9.0"
    driver: str = ""
    memory_mib: int = 0
    # GPU-... (or MIG-...), as CUDA_VISIBLE_DEVICES may name it; kept out of records, since
    # it names one physical board
    uuid: str = Field(default="", exclude=True)
    index: int | None = None  # nvidia-smi's index (PCI bus order), not the CUDA ordinal


class HostInfo(BaseModel):
    """What a measurement was taken on, and what the loader matches requirements against."""

    model_config = ConfigDict(extra="forbid")
    arch: str  # x86_64 | aarch64
    cpu_model: str
    cpu_count: int
    isa: list[str]
    os: str
    hostname: str = ""
    gpus: list[GpuInfo] = Field(default_factory=list)
    runtimes: dict[str, str] = Field(default_factory=dict)
    emulated: str = ""  # e.g. "qemu-aarch64 (cpu neoverse-n1)" when measured under emulation

    @model_validator(mode="before")
    @classmethod
    def _derived_on_read(cls, data: Any) -> Any:
        """`isa_class` is written out but always derived from `isa`: drop it on read, so a
        record computes it the same way whichever version wrote it (older ones lack it)."""
        if isinstance(data, dict) and "isa_class" in data:
            data = {k: v for k, v in data.items() if k != "isa_class"}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def isa_class(self) -> IsaClass:
        """The CPU's ISA class (compiler/core/isa.py): what it runs natively."""
        return classify_isa(self.arch, self.isa)

    def describe(self) -> str:
        gpu = (
            f", GPU {self.gpus[0].name} (sm {self.gpus[0].compute_capability})" if self.gpus else ""
        )
        emu = f", emulated: {self.emulated}" if self.emulated else ""
        return f"{self.arch} {self.cpu_model} x{self.cpu_count} ({self.isa_class}){gpu}{emu}"


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(m, m)


def _cpuinfo() -> tuple[str, list[str]]:
    model, flags = platform.processor() or "unknown", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model in (
                    "unknown",
                    "",
                    platform.machine(),
                ):
                    model = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, sorted(flags & INTERESTING_FLAGS)


def _cuda_order(gpus: list[GpuInfo], device_order: str) -> list[GpuInfo]:
    """The GPUs in the order CUDA numbers them: PCI bus order with CUDA_DEVICE_ORDER=PCI_BUS_ID,
    else fastest first (approximated by compute capability, then memory; ties in PCI order)."""
    if device_order.strip().upper() == "PCI_BUS_ID":
        return list(gpus)

    def speed(g: GpuInfo) -> tuple[tuple[int, ...], int]:
        cc = tuple(int(p) for p in g.compute_capability.split(".") if p.isdigit())
        return cc, g.memory_mib

    return sorted(gpus, key=speed, reverse=True)


def visible_gpus(
    gpus: list[GpuInfo],
    cuda_visible_devices: str | None,
    device_order: str = "",
    migs: Sequence[GpuInfo] = (),
) -> list[GpuInfo]:
    """The GPUs this process's CUDA ordinals 0, 1, ... name, from all GPUs (`gpus`, PCI bus
    order), their MIG instances (`migs`, from `mig_devices`) and CUDA_VISIBLE_DEVICES (None:
    unset): indices, (prefixes of) UUIDs, MIG-... UUIDs or the older MIG-GPU-.../GI/CI form;
    as CUDA does, the list ends at the first entry that names no device or repeats one."""
    ordered = _cuda_order(gpus, device_order)
    if cuda_visible_devices is None:
        return ordered
    out: list[GpuInfo] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        if entry.lstrip("+-").isdigit():
            n = int(entry)
            found = ordered[n] if 0 <= n < len(ordered) else None
        else:
            # MIG-GPU-<uuid>/<gi>/<ci> (drivers before R470) is named in full by -L too
            pool = migs if entry.startswith("MIG-") else gpus
            named = [g for g in pool if entry and g.uuid.startswith(entry)]
            found = named[0] if len(named) == 1 else None
        if found is None or found in out:
            break
        out.append(found)
    return out


_MIG_LINE = re.compile(
    r"^\s+MIG\s+(?P<profile>\S+)\s+Device\s+\d+:\s+\(UUID:\s*(?P<uuid>MIG-[^)\s]+)\)"
)
_GPU_LINE = re.compile(r"^GPU\s+(?P<index>\d+):.*\(UUID:\s*(?P<uuid>GPU-[^)\s]+)\)")


def mig_devices(listing: str, gpus: list[GpuInfo]) -> list[GpuInfo]:
    """The MIG instances `nvidia-smi -L` lists under each GPU of `gpus`: the GPU's facts
    (compute capability, driver) with the instance's UUID, its profile in the name and its
    memory (the profile's "Ngb") in memory_mib."""
    by_uuid = {g.uuid: g for g in gpus}
    out: list[GpuInfo] = []
    parent: GpuInfo | None = None
    for line in listing.splitlines():
        if m := _GPU_LINE.match(line):
            parent = by_uuid.get(m["uuid"])
        elif (m := _MIG_LINE.match(line)) and parent is not None:
            size = re.search(r"\.(\d+)gb", m["profile"])
            out.append(
                parent.model_copy(
                    update={
                        "name": f"{parent.name} MIG {m['profile']}",
                        "uuid": m["uuid"],
                        "memory_mib": int(size[1]) * 1024 if size else 0,
                    }
                )
            )
    return out


def _smi_row(line: str) -> GpuInfo | None:
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 4:
        return None
    mem = parts[5] if len(parts) > 5 else ""
    return GpuInfo(
        index=int(parts[0]) if parts[0].isdigit() else None,
        uuid=parts[1],
        name=parts[2],
        compute_capability=parts[3],
        driver=parts[4] if len(parts) > 4 else "",
        memory_mib=int(float(mem)) if mem.replace(".", "").isdigit() else 0,
    )


def _nvidia_gpus() -> list[GpuInfo]:
    """The GPUs this process uses, CUDA ordinal 0 first (CUDA_VISIBLE_DEVICES honoured)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run(
            [
                smi,
                "--query-gpu=index,uuid,name,compute_cap,driver_version,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = [g for line in out.strip().splitlines() if (g := _smi_row(line)) is not None]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    migs: list[GpuInfo] = []
    if visible is not None and "MIG-" in visible:  # a MIG slice: nvidia-smi -L names them
        try:
            listing = subprocess.run(
                [smi, "-L"], capture_output=True, text=True, timeout=20, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        migs = mig_devices(listing, rows)
    return visible_gpus(rows, visible, os.environ.get("CUDA_DEVICE_ORDER", ""), migs)


def runtime_version(name: str) -> str | None:
    """Version of an importable runtime, or None when it cannot be imported here."""
    module, dists = RUNTIME_MODULES[name]
    if importlib.util.find_spec(module) is None:
        return None
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@functools.lru_cache(maxsize=1)
def probe_host() -> HostInfo:
    model, isa = _cpuinfo()
    runtimes = {n: v for n in RUNTIME_MODULES if (v := runtime_version(n)) is not None}
    return HostInfo(
        arch=normalize_arch(platform.machine()),
        cpu_model=model,
        cpu_count=os.cpu_count() or 1,
        isa=isa,
        os=f"{platform.system()} {platform.release()}",
        hostname=platform.node(),
        gpus=_nvidia_gpus(),
        runtimes=runtimes,
    )


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.replace("+", ".").replace("-", ".").split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


class Requirements(BaseModel):
    """What an artifact needs of the host that runs it."""

    model_config = ConfigDict(extra="forbid")
    arch: str  # x86_64 | aarch64
    isa: list[str] = Field(default_factory=list, description="CPU features the code needs")
    isa_any: list[str] = Field(
        default_factory=list, description="CPU features of which the host needs one (bf16)"
    )
    gpu: bool = False
    gpu_compute_capabilities: list[str] = Field(
        default_factory=list, description="compute capabilities the artifact has code for, e.g. 9.0"
    )
    runtime: str  # onnxruntime | openvino | tvm | tensorrt
    min_runtime_version: str = ""
    # What the artifact is built for, not what it needs: its int8 flavour (read off its
    # quantized graph) and the ISA classes it is meant for (empty: every class). An AVX2-safe
    # int8 artifact runs on a VNNI host too; serving ranks by these where it has no latency
    # measured on the host's class (compiler/serving/selection.py).
    int8: Int8Flavour | None = None
    meant_for: list[IsaClass] = Field(default_factory=list)

    def mismatches(self, host: HostInfo) -> list[Mismatch]:
        """Why this artifact cannot run on `host`; empty when it can."""
        why = []
        if host.arch != self.arch:
            why.append(Mismatch("arch", f"needs {self.arch}, host is {host.arch}"))
        missing = sorted(set(self.isa) - set(host.isa))
        if missing:
            why.append(Mismatch("isa", f"needs CPU features {missing} the host lacks"))
        if self.isa_any and not set(self.isa_any) & set(host.isa):
            why.append(
                Mismatch("isa", f"needs one of the CPU features {self.isa_any}; the host has none")
            )
        if self.gpu:
            if not host.gpus:
                why.append(Mismatch("gpu", "needs an NVIDIA GPU, host has none"))
            elif self.gpu_compute_capabilities and not any(
                g.compute_capability in self.gpu_compute_capabilities for g in host.gpus
            ):
                have = [g.compute_capability for g in host.gpus]
                why.append(
                    Mismatch(
                        "gpu",
                        f"has code for compute capability {self.gpu_compute_capabilities}, "
                        f"host GPU is {have}",
                    )
                )
        have_rt = host.runtimes.get(self.runtime)
        if have_rt is None:
            why.append(
                Mismatch("runtime", f"runtime '{self.runtime}' is not importable on this host")
            )
        elif (
            self.min_runtime_version
            and have_rt != "unknown"
            and _version_tuple(have_rt) < _version_tuple(self.min_runtime_version)
        ):
            why.append(
                Mismatch(
                    "runtime",
                    f"needs {self.runtime} >= {self.min_runtime_version}, host has {have_rt}",
                )
            )
        return why


@dataclass(frozen=True)
class Mismatch:
    """One reason an artifact cannot run on a host; `kind` is what callers decide on."""

    kind: Literal["arch", "isa", "gpu", "runtime"]
    message: str

    def __str__(self) -> str:
        return self.message
